"""Score the audio model stages (``make eval-audio``): DER, main-stream purity, word onsets, WER, RTF.

* Diarization (:mod:`diarization_eval`): cross-validated DER (pyannote.metrics, collars from the
  config; miss / false alarm / confusion) and main-stream purity per recording of the dev set
  (:mod:`devset`: every real recording of ``../shared/data/diarization`` with a reference plus
  simulated conversations), mean and pooled per kind; only held-out figures are reported.
* Word onset error (median, p90 ms) of the transcriber against hand-aligned TextGrids in
  ``../shared/data/word_alignment``, ASR words matched to reference words by difflib over normalized text.
* WER of the transcriber against ``pyannote/audio/sample/sample.stm``.

Writes a JSON with every figure and prints a table with PASS/FAIL per target; exits 1 when a target is missed (0 with --report-only).
"""
from __future__ import annotations

import difflib
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from moshi_data.pipeline.audio.devset import load_audio_16k
from moshi_data.pipeline.config import REPO_ROOT, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

SHARED_DATA = Path(os.environ.get("MOSHI_DATA_SHARED", REPO_ROOT.parent / "shared")) / "data"


# ---------------------------------------------------------------------------- inputs
def parse_textgrid(text: str) -> dict[str, list[tuple[float, float, str]]]:
    """Interval tiers of a Praat TextGrid (long or short text format): name -> [(start, end, label)]."""
    text = re.sub(r"\[\s*\d*\s*\]", "", text)  # item [1]: / intervals [2]:
    tokens = [m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2)
              for m in re.finditer(r'"((?:[^"]|"")*)"|(<exists>|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)', text)]
    if tokens[:2] != ["ooTextFile", "TextGrid"]:
        raise ValueError("not a Praat TextGrid text file")
    position = 4
    if tokens[position] == "<exists>":
        position += 1
    num_tiers = int(float(tokens[position]))
    position += 1
    tiers: dict[str, list[tuple[float, float, str]]] = {}
    for _ in range(num_tiers):
        kind, name = tokens[position], tokens[position + 1]
        count = int(float(tokens[position + 4]))
        position += 5
        if kind == "IntervalTier":
            tiers[name] = [(float(tokens[position + 3 * i]), float(tokens[position + 3 * i + 1]),
                            tokens[position + 3 * i + 2]) for i in range(count)]
            position += 3 * count
        else:  # TextTier: (time, mark) points
            position += 2 * count
    return tiers


def normalize_word(word: str) -> str:
    """Lower-case letters/digits/apostrophes only, for matching ASR words to references."""
    return re.sub(r"[^\w']", "", word.lower().replace("’", "'")).strip("'")


def reference_words(tiers: dict, tier_names: Iterable[str]) -> list[tuple[float, float, str]]:
    """Word intervals of the first listed tier present, without pauses and non-speech labels."""
    for name in tier_names:
        if name in tiers:
            return [(s, e, label) for s, e, label in tiers[name]
                    if normalize_word(label) and not label.strip().startswith("<")]
    raise ValueError(f"no word tier among {list(tier_names)} (tiers: {list(tiers)})")


def parse_stm(text: str) -> list[tuple[float, float, str]]:
    """(start, end, transcript) of each STM line."""
    rows = []
    for line in text.splitlines():
        fields = line.split(maxsplit=5)
        if len(fields) >= 5 and not line.startswith(";;"):
            rows.append((float(fields[3]), float(fields[4]), fields[5] if len(fields) > 5 else ""))
    return rows


# ---------------------------------------------------------------------------- metrics
def word_error_rate(reference: list[str], hypothesis: list[str]) -> dict:
    """Levenshtein WER with substitution/deletion/insertion counts."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    cost = np.zeros((rows, cols), dtype=int)
    cost[:, 0], cost[0, :] = np.arange(rows), np.arange(cols)
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i, j] = min(cost[i - 1, j] + 1, cost[i, j - 1] + 1,
                             cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]))
    i, j, subs, dels, ins = rows - 1, cols - 1, 0, 0, 0
    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            subs += reference[i - 1] != hypothesis[j - 1]
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            dels, i = dels + 1, i - 1
        else:
            ins, j = ins + 1, j - 1
    return {"wer": float(cost[-1, -1] / max(len(reference), 1)), "substitutions": int(subs),
            "deletions": int(dels), "insertions": int(ins), "reference_words": len(reference)}


def match_onsets(reference: list[tuple[float, float, str]], words) -> tuple[list[float], int]:
    """Onset errors (s) of reference words matched (same normalized text, difflib) to ASR words."""
    ref_tokens = [normalize_word(w) for _, _, w in reference]
    hyp_tokens = [normalize_word(w.word) for w in words]
    matcher = difflib.SequenceMatcher(a=ref_tokens, b=hyp_tokens, autojunk=False)
    errors = []
    for block in matcher.get_matching_blocks():
        for offset in range(block.size):
            errors.append(abs(words[block.b + offset].start - reference[block.a + offset][0]))
    return errors, len(ref_tokens)


# ---------------------------------------------------------------------------- evaluation
def min_main_speech_s() -> float:
    """Seconds of speech a main speaker needs (``streams.min_main_speech_s`` of the audio-shards job): the purity is
    scored as the shards choose main speakers."""
    return float(load_config("audio_shards")["streams"]["min_main_speech_s"])


def selection_purity_targets(evaluation: dict) -> tuple[float, float] | None:
    """(precision, recall) purity targets the CV's selection is subject to, or None
    (``evaluation.cv.subject_to_purity_targets`` off)."""
    if not evaluation["cv"]["subject_to_purity_targets"]:
        return None
    targets = evaluation["targets"]
    return float(targets["main_purity_precision"]), float(targets["main_purity_recall"])


def evaluate_diarization(diarizer, config: dict, data: Path, log=print) -> dict:
    """Cross-validated DER and purity on the dev set, plus the silent-file check."""
    from moshi_data.pipeline.audio.devset import build_devset
    from moshi_data.pipeline.audio.diarization_eval import cross_validate, parameter_grid

    evaluation = config["evaluation"]
    recordings = build_devset(data, evaluation["devset"])
    cv = evaluation["cv"]
    cache = Path(cv["cache"]) if cv["cache"] else None
    results = cross_validate(diarizer, recordings, parameter_grid(cv["grid"]), evaluation["collars"],
                             float(cv["select_collar"]), min_main_speech_s(),
                             cache if cache is None or cache.is_absolute() else REPO_ROOT / cache,
                             purity_targets=selection_purity_targets(evaluation),
                             bound_recall=float(evaluation["targets"]["main_purity_recall"]), log=log)
    empty = data / "diarization/pyannote_ami_debug/empty.wav"
    results["empty_wav_turns"] = len(diarizer.diarize(load_audio_16k(empty))) if empty.exists() else None
    results["select_collar"] = float(cv["select_collar"])
    return results


def evaluate_alignment(transcriber, data: Path, evaluation: dict, language: str) -> dict:
    root = data / "word_alignment"
    per_file, errors, total_ref = [], [], 0
    for set_name, set_language in evaluation["word_alignment_sets"].items():
        for grid in sorted((root / set_name).glob("*.TextGrid")):
            tiers = parse_textgrid(grid.read_text(encoding="utf-8", errors="replace"))
            wav = next((grid.with_name(stem + ".wav") for stem in (grid.stem, grid.stem.rsplit("_", 1)[0])
                        if grid.with_name(stem + ".wav").exists()), None)
            if wav is None or not any(name in tiers for name in evaluation["word_tiers"]):
                continue  # e.g. praatio/bobby_phones.TextGrid: phones only (its words are in bobby_words)
            reference = reference_words(tiers, evaluation["word_tiers"])
            scored = set_language == language
            entry = {"set": set_name, "file": grid.name, "language": set_language, "scored": scored,
                     "reference_words": len(reference)}
            if scored:
                transcription = transcriber.transcribe(load_audio_16k(wav))
                file_errors, count = match_onsets(reference, transcription.words)
                entry.update(matched=len(file_errors), hypothesis=transcription.text,
                             median_ms=float(np.median(file_errors) * 1000) if file_errors else None)
                errors += file_errors
                total_ref += count
            per_file.append(entry)
    errors_ms = np.asarray(errors) * 1000
    return {"per_file": per_file, "reference_words": total_ref, "matched_words": len(errors),
            "matched_fraction": len(errors) / max(total_ref, 1),
            "median_ms": float(np.median(errors_ms)) if errors else None,
            "p90_ms": float(np.percentile(errors_ms, 90)) if errors else None,
            "mean_ms": float(errors_ms.mean()) if errors else None}


def evaluate_wer(transcriber) -> tuple[dict, object, float]:
    import pyannote.audio.sample as pyannote_sample

    package_dir = Path(pyannote_sample.__file__).parent
    reference = [normalize_word(w) for _, _, text in parse_stm((package_dir / "sample.stm").read_text())
                 for w in text.split()]
    audio = load_audio_16k(package_dir / "sample.wav")
    started = time.perf_counter()
    transcription = transcriber.transcribe(audio)
    elapsed = time.perf_counter() - started
    hypothesis = [normalize_word(w.word) for w in transcription.words]
    scores = word_error_rate([w for w in reference if w], [w for w in hypothesis if w])
    scores.update(hypothesis=transcription.text, alignment_counts=transcription.alignment_counts,
                  words_without_times=sum(1 for w in transcription.words if not w.end > w.start))
    return scores, transcription, elapsed / (audio.size / 16000)


def check_targets(metrics: dict, targets: dict) -> list[tuple[str, float, str, float, bool]]:
    """(name, value, comparison, target, passed) for each target (diarization figures cross-validated)."""
    real = metrics["diarization"]["summary"]["real"]
    sample = next(r for r in metrics["diarization"]["per_recording"] if r["uri"] == "sample")
    purity = real["purity_most_speech"] or {"precision": None, "recall": None}
    onset = metrics["word_alignment"]
    rows = [("DER sample, held out (collar .25)", sample["collar_0.25"]["der"], "<=", targets["der_sample_collar_025"]),
            ("DER real mean, cross-validated (collar .25)", real["collar_0.25"]["mean_der"], "<=",
             targets["der_real_mean_cv_collar_025"]),
            ("DER real pooled, cross-validated (collar .25)", real["collar_0.25"]["pooled"]["der"], "<=",
             targets["der_real_pooled_cv_collar_025"]),
            ("main-stream purity: share of its turn time that is the mapped speaker", purity["precision"], ">=",
             targets["main_purity_precision"]),
            ("main-stream purity: share of the speaker in the main stream", purity["recall"], ">=",
             targets["main_purity_recall"]),
            ("word onset median ms", onset["median_ms"], "<=", targets["onset_median_ms"]),
            ("reference words matched", onset["matched_fraction"], ">=", targets["onset_matched_fraction"])]
    return [(name, value, op, target, value is not None and (value <= target if op == "<=" else value >= target))
            for name, value, op, target in rows]


def _missed_text(missed) -> str:
    return f"{missed['overlap']:.1f}/{missed['single']:.1f}/{missed['whole_turns']:.1f}"


def _ms_text(value) -> str:
    return "n/a (no word matched)" if value is None else f"{value:.1f} ms"


def _purity_text(purity) -> str:
    return "  -  " if not purity else f"{purity['precision']:.2f}/{purity['recall']:.2f}"


def _other_precisions_text(purity) -> str:
    return "-" if not purity else f"{purity['precision_of_speech']:.2f} / {purity['precision_of_speaker_time']:.2f}"


def selection_lines(diarization: dict) -> list[str]:
    """Report lines on the CV's selection: whether the purity constraint (when on) held per fold, and the in-sample
    purity bound."""
    lines = []
    if diarization["purity_targets"]:
        unmet = [("the all-data choice" if fold == "all" else f"fold {fold}")
                 for fold, met in diarization["purity_constraint_met"].items() if not met]
        lines.append(f"selection: lowest training DER among settings whose training purity (real recordings) reaches "
                     f"precision {diarization['purity_targets']['precision']:g} / recall "
                     f"{diarization['purity_targets']['recall']:g}; " +
                     (f"no setting did for {', '.join(unmet)}: lowest DER there" if unmet
                      else "met in every fold and on all recordings"))
    bound = diarization["purity_precision_bound_in_sample"]
    if diarization.get("purity_bound_recall") is not None:
        lines.append("purity precision bound, in sample (an upper bound on the most any assignment of grid settings to "
                     "the counted real recordings could reach at mean recall >= the recall target; a diagnostic, not a "
                     "reported figure): " + (f"{bound:.3f}" if bound is not None else
                                             "none (no assignment gives every counted recording a main speaker at "
                                             "that mean recall)"))
    return lines


def format_table(metrics: dict, checks) -> str:
    diarization = metrics["diarization"]
    lines = ["", f"DIARIZATION, held-out folds ({len(diarization['chosen_per_fold'])}-fold CV over recordings, "
             f"{diarization['grid_size']} settings): DER = miss + false alarm + confusion; purity = main stream "
             "(most speech) precision (share of its turn time that is the mapped speaker's) / recall",
             f"{'kind':9} {'uri':8} fold {'dur s':>6} spk r/h {'DER.25':>7} {'miss':>6} {'FA':>6} {'conf':>6} "
             f"{'DER0':>7} purity    missed s: overlap/single/whole turns  method/threshold/min_cluster/min_off/CAM++ share/step/speech bias/overlap bias"]
    for r in diarization["per_recording"]:
        c, c0, g = r["collar_0.25"], r["collar_0"], r["setting"]
        lines.append(f"{r['kind']:9} {r['uri']:8} {r['fold']:>4} {r['duration_s']:6.1f} {r['speakers_ref']:>3}/"
                     f"{r['speakers_hyp']:<3} {c['der']:7.3f} {c['missed']:6.3f} {c['false_alarm']:6.3f} "
                     f"{c['confusion']:6.3f} {c0['der']:7.3f} {_purity_text(r['purity']['most_speech']):9} "
                     f"{_missed_text(r['missed_s']):36} {g['method']}/{g['threshold']}/{g['min_cluster_size']}/{g['min_duration_off']}/{g['fusion_weight']}/"
                     f"{g['segmentation_step']}/{g['speech_bias']}/{g['overlap_bias']}")
    for kind, summary in diarization["summary"].items():
        for key in ("collar_0.25", "collar_0"):
            pooled = summary[key]["pooled"]
            lines.append(f"{kind} ({summary['recordings']} recordings, {summary['hours'] * 60:.1f} min) {key}: mean DER "
                         f"{summary[key]['mean_der']:.3f}, pooled DER {pooled['der']:.3f} (miss {pooled['missed']:.3f}, "
                         f"FA {pooled['false_alarm']:.3f}, confusion {pooled['confusion']:.3f})")
        lines.append(f"{kind} missed speech (s, collar {diarization['select_collar']:g}): {_missed_text(summary['missed_s'])}")
        lines.append(f"{kind} main-stream purity (mean precision/recall): most_speech "
                     f"{_purity_text(summary['purity_most_speech'])}, random {_purity_text(summary['purity_random'])}, "
                     f"each {_purity_text(summary['purity_each'])}; most_speech precision of speech (union) / of "
                     f"speaker time (each voice counted): {_other_precisions_text(summary['purity_most_speech'])}")
    lines.append(f"chosen per fold: {diarization['chosen_per_fold']}")
    lines += selection_lines(diarization)
    lines.append(f"chosen on all recordings (the config default; in-sample mean DER "
                 f"{diarization['all_data_choice_in_sample_mean_der']:.3f}, not a reported figure): "
                 f"{diarization['all_data_choice']}")
    lines.append(f"empty.wav turns: {diarization['empty_wav_turns']}")
    onset = metrics["word_alignment"]
    lines += ["", "WORD ONSETS (hand-aligned TextGrids)"]
    for f in onset["per_file"]:
        detail = (f"matched {f['matched']}/{f['reference_words']} median {f['median_ms']:.0f} ms"
                  if f["scored"] and f["median_ms"] is not None else
                  ("not scored: language " + f["language"]) if not f["scored"] else "no match")
        lines.append(f"  {f['set']}/{f['file']}: {detail}")
    lines.append(f"  all: matched {onset['matched_words']}/{onset['reference_words']} "
                 f"({onset['matched_fraction']:.0%}), median {_ms_text(onset['median_ms'])}, p90 {_ms_text(onset['p90_ms'])}, "
                 f"mean {_ms_text(onset['mean_ms'])}")
    wer = metrics["wer"]
    lines += ["", f"WER pyannote sample.stm: {wer['wer']:.3f} (S {wer['substitutions']} D {wer['deletions']} "
              f"I {wer['insertions']} of {wer['reference_words']}); alignment {wer['alignment_counts']}",
              f"RTF on the 30 s sample (2 cores shared): transcribe {metrics['rtf']['transcribe']:.3f}, "
              f"diarize {metrics['rtf']['diarize']:.3f}", "", "TARGETS"]
    for name, value, op, target, passed in checks:
        shown = "n/a" if value is None else f"{value:.3f}"
        lines.append(f"  {'PASS' if passed else 'FAIL'}  {name}: {shown} {op} {target}")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Exit 1 when a target is missed (``--report-only``: print the same, exit 0)."""
    from moshi_data.pipeline.command import command_parser, run_command

    parser = command_parser(__name__, __doc__, config="audio_models")
    parser.add_argument("--output", default=None, help="metrics JSON (default: evaluation.output of the config)")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data folder (../shared/data)")
    parser.add_argument("--report-only", action="store_true", help="exit 0 even when a target is missed")
    return run_command(parser, argv, _main)


def _main(args) -> int:
    from moshi_data.pipeline.audio.diarization_eval import check_grid
    from moshi_data.pipeline.audio.diarize import Diarizer
    from moshi_data.pipeline.audio.transcribe import Transcriber
    from moshi_data.pipeline.command import UserError, package_version

    config = args.cfg
    evaluation = config["evaluation"]
    check_grid(evaluation["cv"]["grid"])  # before any model loads: a bad grid would fail after the model outputs
    if not args.data.is_dir():
        raise UserError(f"shared data folder missing: {args.data}")
    transcriber, diarizer = Transcriber(config), Diarizer(config)
    transcriber.setup()
    diarizer.setup()
    warm_up = load_audio_16k(args.data / "diarization/pyannote_sample/sample.wav")[: 16000 * 8]
    transcriber.transcribe(warm_up)
    diarizer.diarize(warm_up)

    wer, _, transcribe_rtf = evaluate_wer(transcriber)
    sample = load_audio_16k(args.data / "diarization/pyannote_sample/sample.wav")
    started = time.perf_counter()
    diarizer.diarize(sample)
    diarize_rtf = (time.perf_counter() - started) / (sample.size / 16000)
    metrics = {
        "config": args.config, "version": package_version(), "settings": config,
        "model_versions": {**transcriber.model_versions, **diarizer.model_versions},
        "rtf": {"transcribe": transcribe_rtf, "diarize": diarize_rtf, "cpu_threads": config["cpu_threads"]},
        "wer": wer,
        "word_alignment": evaluate_alignment(transcriber, args.data, evaluation, config["asr"]["language"] or "en"),
        "diarization": evaluate_diarization(diarizer, config, args.data),
    }
    checks = check_targets(metrics, evaluation["targets"])
    metrics["targets"] = [{"name": n, "value": v, "op": op, "target": t, "passed": p} for n, v, op, t, p in checks]
    output = Path(args.output or evaluation["output"])
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    temporary.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    temporary.replace(output)
    print(format_table(metrics, checks))
    print(f"\nmetrics written to {output}")
    fail_on_missed_targets(checks, args.report_only)
    return 0


def fail_on_missed_targets(checks: list[tuple[str, float, str, float, bool]], report_only: bool) -> None:
    """Raise RunFailed (exit 1) naming the missed targets, unless only reporting."""
    from moshi_data.pipeline.command import RunFailed

    missed = [name for name, _, _, _, passed in checks if not passed]
    if missed and not report_only:
        raise RunFailed(f"{len(missed)} of {len(checks)} targets missed: {', '.join(missed)} (--report-only to exit 0)")


if __name__ == "__main__":
    sys.exit(main())
