"""Score the audio model stages (``make eval-audio``): DER, word onset error, WER, real-time factors.

* DER (pyannote.metrics, collars from the config) of the diarizer against the RTTMs in
  ``../shared/data/diarization`` (pyannote sample + AMI debug clips, train + development) and against
  ``pyannote/audio/sample/sample.rttm`` shipped in the pyannote package.
* Word onset error (median, p90 ms) of the transcriber against hand-aligned TextGrids in
  ``../shared/data/word_alignment``, ASR words matched to reference words by difflib over normalized text.
* WER of the transcriber against ``pyannote/audio/sample/sample.stm``.

Writes a JSON with every figure and prints a table with PASS/FAIL per target; exits 0 unless it crashed.
"""
from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import sys
import time
import unicodedata
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from moshi_data.pipeline.config import REPO_ROOT, load_config

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")

SHARED_DATA = Path(os.environ.get("MOSHI_DATA_SHARED", REPO_ROOT.parent / "shared")) / "data"


# ---------------------------------------------------------------------------- inputs
def load_audio_16k(path: Path) -> np.ndarray:
    """Mono float32 16 kHz samples of an audio file (channels averaged, polyphase resampling)."""
    import soundfile as sf
    from scipy.signal import resample_poly

    samples, rate = sf.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != 16000:
        divisor = np.gcd(int(rate), 16000)
        mono = resample_poly(mono, 16000 // divisor, int(rate) // divisor).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def ascii_uri(name: str) -> str:
    """RTTM uri of a file stem: accents dropped (the debug protocol's trñ00.wav is uri trn00)."""
    return "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))


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


def _annotation(turns):
    from pyannote.core import Annotation, Segment

    annotation = Annotation()
    for turn in turns:
        annotation[Segment(turn.start, turn.end)] = turn.speaker
    return annotation


def diarization_scores(reference, hypothesis, collars: Iterable[float]) -> dict:
    """DER and its components (as fractions of reference speech) per collar."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    result = {}
    for collar in collars:
        detail = DiarizationErrorRate(collar=collar, skip_overlap=False)(
            _annotation(reference), _annotation(hypothesis), detailed=True)
        total = detail["total"] or 1.0
        result[f"collar_{collar:g}"] = {
            "der": float(detail["diarization error rate"]), "missed": float(detail["missed detection"] / total),
            "false_alarm": float(detail["false alarm"] / total), "confusion": float(detail["confusion"] / total),
            "reference_speech_s": float(detail["total"]),
            "errors_s": float(detail["missed detection"] + detail["false alarm"] + detail["confusion"])}
    return result


# ---------------------------------------------------------------------------- evaluation
def diarization_cases(data: Path) -> list[tuple[str, str, Path, Path]]:
    """(set, uri, wav, rttm) of every scored recording."""
    import pyannote.audio.sample as pyannote_sample

    cases = [("pyannote_sample", "sample", data / "diarization/pyannote_sample/sample.wav",
              data / "diarization/pyannote_sample/sample.rttm")]
    ami = data / "diarization/pyannote_ami_debug"
    wav_by_uri = {ascii_uri(p.stem): p for p in sorted(ami.glob("*.wav"))}
    for subset in ("train", "development"):
        for listed in (ami / f"debug.{subset}.lst").read_text(encoding="utf-8").split():
            uri = ascii_uri(listed)  # the list says trñ00, its RTTM lines say trn00
            if uri not in wav_by_uri:
                raise FileNotFoundError(f"no wav for uri {uri} in {ami}")
            cases.append((f"ami_{subset}", uri, wav_by_uri[uri], ami / f"debug.{subset}.rttm"))
    package_dir = Path(pyannote_sample.__file__).parent
    cases.append(("pyannote_package", "sample", package_dir / "sample.wav", package_dir / "sample.rttm"))
    return cases


def evaluate_diarization(diarizer, data: Path, collars) -> dict:
    from moshi_data.pipeline.audio.rttm import read_rttm

    per_file = []
    for subset, uri, wav, rttm in diarization_cases(data):
        reference = read_rttm(rttm.read_text(encoding="utf-8"))[uri]
        turns = diarizer.diarize(load_audio_16k(wav))
        per_file.append({"set": subset, "uri": uri, "file": wav.name,
                         "speakers_ref": len({t.speaker for t in reference}),
                         "speakers_hyp": len({t.speaker for t in turns}),
                         **diarization_scores(reference, turns, collars)})
    empty = data / "diarization/pyannote_ami_debug/empty.wav"
    summary = {}
    for collar in collars:
        key = f"collar_{collar:g}"
        ami = [f[key] for f in per_file if f["set"].startswith("ami_")]
        summary[key] = {
            "sample": next(f[key]["der"] for f in per_file if f["set"] == "pyannote_sample"),
            "package_sample": next(f[key]["der"] for f in per_file if f["set"] == "pyannote_package"),
            "ami_mean": float(np.mean([a["der"] for a in ami])),
            "ami_pooled": float(sum(a["errors_s"] for a in ami) / sum(a["reference_speech_s"] for a in ami)),
            "ami_median": float(np.median([a["der"] for a in ami]))}
    return {"per_file": per_file, "summary": summary,
            "empty_wav_turns": len(diarizer.diarize(load_audio_16k(empty))) if empty.exists() else None}


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
    """(name, value, comparison, target, passed) for each target."""
    der = metrics["diarization"]["summary"]["collar_0.25"]
    onset = metrics["word_alignment"]
    rows = [("DER sample (collar .25)", der["sample"], "<=", targets["der_sample_collar_025"]),
            ("DER package sample.rttm (collar .25)", der["package_sample"], "<=", targets["der_sample_collar_025"]),
            ("DER AMI mean (collar .25)", der["ami_mean"], "<=", targets["der_ami_mean_collar_025"]),
            ("word onset median ms", onset["median_ms"], "<=", targets["onset_median_ms"]),
            ("reference words matched", onset["matched_fraction"], ">=", targets["onset_matched_fraction"])]
    return [(name, value, op, target, value is not None and (value <= target if op == "<=" else value >= target))
            for name, value, op, target in rows]


def format_table(metrics: dict, checks) -> str:
    lines = ["", "DIARIZATION (DER; miss / false alarm / confusion)", f"{'set':18} {'uri':7} spk r/h "
             f"{'DER.25':>7} {'miss':>6} {'FA':>6} {'conf':>6} {'DER0':>7}"]
    for f in metrics["diarization"]["per_file"]:
        c, c0 = f["collar_0.25"], f["collar_0"]
        lines.append(f"{f['set']:18} {f['uri']:7} {f['speakers_ref']:>3}/{f['speakers_hyp']:<3} {c['der']:7.3f} "
                     f"{c['missed']:6.3f} {c['false_alarm']:6.3f} {c['confusion']:6.3f} {c0['der']:7.3f}")
    for key, summary in metrics["diarization"]["summary"].items():
        lines.append(f"{key}: sample {summary['sample']:.3f}  package sample {summary['package_sample']:.3f}  "
                     f"AMI mean {summary['ami_mean']:.3f}  AMI pooled {summary['ami_pooled']:.3f}  "
                     f"AMI median {summary['ami_median']:.3f}")
    lines.append(f"empty.wav turns: {metrics['diarization']['empty_wav_turns']}")
    onset = metrics["word_alignment"]
    lines += ["", "WORD ONSETS (hand-aligned TextGrids)"]
    for f in onset["per_file"]:
        detail = (f"matched {f['matched']}/{f['reference_words']} median {f['median_ms']:.0f} ms"
                  if f["scored"] and f["median_ms"] is not None else
                  ("not scored: language " + f["language"]) if not f["scored"] else "no match")
        lines.append(f"  {f['set']}/{f['file']}: {detail}")
    lines.append(f"  all: matched {onset['matched_words']}/{onset['reference_words']} "
                 f"({onset['matched_fraction']:.0%}), median {onset['median_ms']:.1f} ms, p90 {onset['p90_ms']:.1f} ms, "
                 f"mean {onset['mean_ms']:.1f} ms")
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
    parser = argparse.ArgumentParser(prog="python -m moshi_data.pipeline.audio.evaluate", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="audio_models", help="config name or YAML path (audio_models)")
    parser.add_argument("--output", default=None, help="metrics JSON (default: evaluation.output of the config)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override, e.g. diarization.clustering.threshold=1.4")
    parser.add_argument("--data", type=Path, default=SHARED_DATA, help="shared data folder (../shared/data)")
    args = parser.parse_args(argv)

    from moshi_data.pipeline.audio.diarize import Diarizer
    from moshi_data.pipeline.audio.transcribe import Transcriber

    config = load_config(args.config, args.overrides)
    evaluation = config["evaluation"]
    if not args.data.is_dir():
        raise SystemExit(f"shared data folder missing: {args.data}")
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
        "config": args.config, "model_versions": {**transcriber.model_versions, **diarizer.model_versions},
        "rtf": {"transcribe": transcribe_rtf, "diarize": diarize_rtf, "cpu_threads": config["cpu_threads"]},
        "wer": wer,
        "word_alignment": evaluate_alignment(transcriber, args.data, evaluation, config["asr"]["language"] or "en"),
        "diarization": evaluate_diarization(diarizer, args.data, evaluation["collars"]),
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
