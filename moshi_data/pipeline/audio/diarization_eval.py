"""Cross-validated diarization scores (``make eval-audio``): DER and main-stream purity per recording.

The expensive model outputs of pyannote's pipeline (segmentation scores and the embedding of every
(window, local speaker)) depend only on the models, not on the clustering hyper-parameters; they are
computed once per recording (pyannote's own training-mode cache in the file dict, also pickled under
``cache_dir``), then every setting of the grid re-runs only clustering and reconstruction. The fused
embedding's CAM++ share (``fusion_weight``) is a grid dimension too: the cached fused vectors' two halves
are rescaled (:func:`embedding.reweight_fused`), not re-embedded.

Each tuned setting is chosen by k-fold cross-validation over recordings: for fold k the setting with
the lowest mean DER on the other folds' recordings is applied to fold k's recordings, and only those
held-out figures are reported. Simulated conversations belong to the fold of the recordings they
were cut from (:mod:`devset`), so no audio is seen on both sides of a split.
"""
from __future__ import annotations

import hashlib
import itertools
import pickle
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from moshi_data.pipeline.audio.devset import DevRecording
from moshi_data.pipeline.audio.diarize import pipeline_parameters
from moshi_data.pipeline.audio.streams import speech_seconds
from moshi_data.pipeline.audio.types import Turn

CACHE_KEYS = ("training_cache/segmentation", "training_cache/embeddings")
PURITY_POLICIES = ("most_speech", "random", "each")  # streams.main_speaker policies scored by main_stream_purity


def annotation(turns: Iterable[Turn]):
    from pyannote.core import Annotation, Segment

    result = Annotation()
    for index, turn in enumerate(turns):
        result[Segment(turn.start, turn.end), index] = turn.speaker
    return result


def der_components(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float) -> dict[str, float]:
    """Seconds of missed speech, false alarm, confusion and reference speech (pyannote.metrics)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    detail = DiarizationErrorRate(collar=collar, skip_overlap=False)(annotation(reference), annotation(hypothesis),
                                                                      detailed=True)
    return {"missed": float(detail["missed detection"]), "false_alarm": float(detail["false alarm"]),
            "confusion": float(detail["confusion"]), "total": float(detail["total"])}


def miss_breakdown(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float,
                   step: float = 0.01) -> dict[str, float]:
    """Seconds of missed speech (as DER counts it: reference minus hypothesis speakers per instant, ``collar``
    seconds around reference boundaries not scored) split by where it is: ``overlap`` (two or more reference
    speakers), ``single`` (one reference speaker, no hypothesis speech) and, of those, ``whole_turns`` (reference
    turns that no hypothesis speech touches); on a ``step`` grid, so the sum is within a frame of pyannote's."""
    end = max([t.end for t in reference] + [t.end for t in hypothesis] + [0.0])
    frames = int(np.ceil(end / step)) + 1
    times = (np.arange(frames) + 0.5) * step

    def counts(turns: Iterable[Turn]) -> np.ndarray:
        active: dict[str, np.ndarray] = {}
        for turn in turns:
            mask = active.setdefault(turn.speaker, np.zeros(frames, bool))
            mask[(times >= turn.start) & (times < turn.end)] = True
        return sum(active.values(), np.zeros(frames, int))

    scored = np.ones(frames, bool)
    for turn in reference:
        for boundary in (turn.start, turn.end):
            scored[np.abs(times - boundary) < collar / 2] = False
    n_ref, n_hyp = counts(reference), counts(hypothesis)
    missed = np.maximum(n_ref - n_hyp, 0) * scored
    untouched = np.zeros(frames, bool)
    for turn in reference:
        inside = (times >= turn.start) & (times < turn.end)
        if not (n_hyp[inside] > 0).any():
            untouched |= inside
    return {"overlap": float(missed[n_ref >= 2].sum() * step), "single": float(missed[n_ref == 1].sum() * step),
            "whole_turns": float(missed[untouched].sum() * step)}


def rates(components: Mapping[str, float]) -> dict[str, float]:
    total = components["total"] or 1.0
    errors = components["missed"] + components["false_alarm"] + components["confusion"]
    return {"der": errors / total, "missed": components["missed"] / total,
            "false_alarm": components["false_alarm"] / total, "confusion": components["confusion"] / total}


def main_stream_purity(reference: Sequence[Turn], hypothesis: Sequence[Turn], min_speech_s: float) -> dict[str, Any]:
    """Purity of the main stream if each hypothesis speaker (with enough speech) were the main speaker.

    Each hypothesis speaker is mapped to a reference speaker (pyannote's optimal DER mapping, else the
    one it overlaps most). ``precision`` = share of that main stream's speech that is the mapped
    speaker's; ``recall`` = share of the mapped speaker's speech that is in the main stream. Returned
    per main-speaker policy of ``streams.main_speaker``: the speaker with most speech (``most_speech``),
    the expected value over a uniformly drawn eligible speaker (``random``) and speech-weighted over
    every eligible speaker (``each``, one sample per speaker).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate

    hyp_speech = speech_seconds(hypothesis)
    eligible = sorted(s for s, seconds in hyp_speech.items() if seconds >= min_speech_s)
    if not eligible or not reference:
        return {policy: None for policy in PURITY_POLICIES}
    ref_ann, hyp_ann = annotation(reference), annotation(hypothesis)
    mapping = DiarizationErrorRate().optimal_mapping(ref_ann, hyp_ann)
    scores = {}
    for speaker in eligible:
        main = hyp_ann.label_timeline(speaker).support()
        overlaps = {label: main.crop(ref_ann.label_timeline(label).support(), mode="intersection").duration()
                    for label in ref_ann.labels()}
        target = mapping.get(speaker) or max(overlaps, key=lambda label: (overlaps[label], label))
        shared = overlaps.get(target, 0.0)
        scores[speaker] = {"reference_speaker": target, "main_s": main.duration(),
                           "precision": shared / main.duration() if main.duration() else 0.0,
                           "recall": shared / ref_ann.label_timeline(target).support().duration()}
    top = min(eligible, key=lambda s: (-hyp_speech[s], s))
    weights = np.array([scores[s]["main_s"] for s in eligible])
    each = {key: float(np.average([scores[s][key] for s in eligible], weights=weights)) for key in ("precision", "recall")}
    uniform = {key: float(np.mean([scores[s][key] for s in eligible])) for key in ("precision", "recall")}
    return {"most_speech": {k: scores[top][k] for k in ("reference_speaker", "precision", "recall")},
            "random": uniform, "each": each}


def parameter_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``evaluation.cv.grid`` (fusion_weight, threshold, min_cluster_size, min_duration_off,
    method); ``fusion_weight`` values are checked to lie in [0, 1]."""
    from moshi_data.pipeline.audio.embedding import check_fusion_weight

    keys = ("fusion_weight", "threshold", "min_cluster_size", "min_duration_off", "method")
    values = [list(grid[key]) for key in keys]
    values[0] = [check_fusion_weight(weight) for weight in values[0]]
    return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def fusion_weight_of(diarizer) -> float | None:
    """CAM++ share of the diarizer's cached embeddings, or None when its embedding is not the fused one."""
    from moshi_data.pipeline.audio.diarize import FUSED_EMBEDDING

    settings = diarizer.settings
    return float(settings["fusion_weight"]) if settings["embedding_model"] == FUSED_EMBEDDING else None


def reweighted_file(file: Mapping[str, Any], campplus_dimension: int, from_weight: float, to_weight: float) -> dict:
    """A copy of a cached file dict whose fused embeddings have CAM++ share ``to_weight`` instead of ``from_weight``
    (unchanged when pyannote cached none: a recording whose segmentation finds no speech is never embedded)."""
    from moshi_data.pipeline.audio.embedding import reweight_fused

    if "training_cache/embeddings" not in file:
        return dict(file)
    cache = dict(file["training_cache/embeddings"])
    cache["embeddings"] = reweight_fused(cache["embeddings"], campplus_dimension, from_weight, to_weight)
    return {**file, "training_cache/embeddings": cache}


# CAM++ share of the fused vectors the CV computes and caches, whatever diarization.fusion_weight says, then rescales
# to each grid weight: strictly inside (0, 1), so every weight in [0, 1] can be reached (a share of 0 or 1 leaves
# one half zero, which no rescaling recovers).
CACHE_FUSION_WEIGHT = 0.5
# Settings the cached model outputs depend on that joined the cache key later, with the value every cache written
# before then was made with: a setting at that value adds nothing to the key, so those caches stay valid.
LATER_CACHE_KEYS = {"fusion_weight": 0.5, "min_active_frames": 20}


def cache_diarizer(diarizer):
    """The diarizer whose model outputs the CV caches: ``diarizer`` itself, or for the fused embedding at another
    weight than :data:`CACHE_FUSION_WEIGHT`, the same settings at that weight (models loaded when first used)."""
    from moshi_data.pipeline.audio.diarize import Diarizer

    weight = fusion_weight_of(diarizer)
    if weight is None or weight == CACHE_FUSION_WEIGHT:
        return diarizer
    return Diarizer({**diarizer.config, "diarization": {**diarizer.settings, "fusion_weight": CACHE_FUSION_WEIGHT}})


def cv_grid(grid: Sequence[Mapping[str, Any]], fused: bool) -> list[dict[str, Any]]:
    """The settings the CV runs: ``grid``, or for an embedding other than the fused one (where the fusion weight
    means nothing) the settings of the grid's first weight, with ``fusion_weight`` None."""
    if fused:
        return [dict(setting) for setting in grid]
    return [{**setting, "fusion_weight": None} for setting in grid if setting["fusion_weight"] == grid[0]["fusion_weight"]]


def files_per_setting(files: Sequence[dict], grid: Sequence[Mapping[str, Any]], campplus_dimension: int | None):
    """(setting, files) for each setting of ``grid`` in order: ``files`` (fused embeddings cached at
    :data:`CACHE_FUSION_WEIGHT`) with the setting's ``fusion_weight`` (``campplus_dimension`` None: unchanged). One rescaled copy is held:
    the same list is yielded every time, its entries replaced when the weight changes (the grid is ordered weight
    first, so each weight's copy is made once; the previous one is freed entry by entry)."""
    current, current_weight = list(files), CACHE_FUSION_WEIGHT
    for setting in grid:
        weight = setting["fusion_weight"]
        if campplus_dimension is not None and weight != current_weight:
            for index, file in enumerate(files):
                current[index] = file if weight == CACHE_FUSION_WEIGHT else reweighted_file(
                    file, campplus_dimension, CACHE_FUSION_WEIGHT, weight)
            current_weight = weight
        yield setting, current


def cached_file(diarizer, recording: DevRecording, cache_dir: Path | None) -> dict[str, Any]:
    """pyannote file dict of a recording with its segmentation and embeddings computed (or loaded) once."""
    file = diarizer.file(recording.audio, recording.uri)
    settings = diarizer.settings
    keys = ("segmentation_model", "embedding_model", "segmentation_step", "embedding_exclude_overlap")
    # the fused vectors depend on the fusion weight (None for other embeddings: their keys unchanged)
    later = {"fusion_weight": fusion_weight_of(diarizer), "min_active_frames": settings["min_active_frames"]}
    key = hashlib.sha256(recording.audio.tobytes() + repr([settings[k] for k in keys] + [
        value for name, value in later.items() if value is not None and value != LATER_CACHE_KEYS[name]]
        ).encode()).hexdigest()[:20]
    path = cache_dir / f"{recording.uri}-{key}.pkl" if cache_dir else None
    if path is not None and path.exists():
        file.update(pickle.loads(path.read_bytes()))
        return file
    diarizer.pipeline.training = True
    diarizer.diarize_file(file)  # fills file["training_cache/..."]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(pickle.dumps({k: file[k] for k in CACHE_KEYS if k in file}))
        temporary.replace(path)
    return file


def cross_validate(diarizer, recordings: Sequence[DevRecording], grid: Sequence[Mapping[str, Any]],
                   collars: Sequence[float], select_collar: float, min_main_speech_s: float,
                   cache_dir: Path | None = None, log=print) -> dict[str, Any]:
    """Held-out DER and purity of every recording, the setting chosen per fold, and the all-data choice.
    Fused embeddings are computed at :data:`CACHE_FUSION_WEIGHT` and rescaled to each grid weight: the configured
    ``diarization.fusion_weight`` (0 and 1 included) plays no part in the CV."""
    diarizer = cache_diarizer(diarizer)
    pipeline = diarizer.pipeline
    files = []
    for recording in recordings:
        log(f"  model outputs: {recording.uri} ({recording.duration:.0f} s)")
        files.append(cached_file(diarizer, recording, cache_dir))
    pipeline.training = True
    fused = fusion_weight_of(diarizer) is not None
    grid = cv_grid(grid, fused)
    # components[g][r][collar] for every grid setting g and recording r
    components: list[list[dict[float, dict[str, float]]]] = []
    turns_by_setting: list[list[list[Turn]]] = []
    for setting, weighted in files_per_setting(files, grid, pipeline._embedding.model_.campplus.dimension if fused else None):
        pipeline.instantiate(pipeline_parameters({"min_duration_off": setting["min_duration_off"], "clustering": setting}))
        row, row_turns = [], []
        for recording, file in zip(recordings, weighted):
            turns = diarizer.diarize_file(file)
            row.append({c: der_components(recording.reference, turns, c) for c in collars})
            row_turns.append(turns)
        components.append(row)
        turns_by_setting.append(row_turns)

    der = np.array([[rates(row[r][select_collar])["der"] for r in range(len(recordings))] for row in components])
    chosen, all_data = choose_settings(der, [r.fold for r in recordings])
    per_recording = []
    for index, recording in enumerate(recordings):
        g = chosen[recording.fold]
        turns = turns_by_setting[g][index]
        entry = {"uri": recording.uri, "kind": recording.kind, "fold": recording.fold,
                 "duration_s": round(recording.duration, 2),
                 "speakers_ref": len({t.speaker for t in recording.reference}),
                 "speakers_hyp": len({t.speaker for t in turns}), "setting": grid[g],
                 "components": {f"collar_{c:g}": components[g][index][c] for c in collars},
                 "missed_s": miss_breakdown(recording.reference, turns, select_collar),
                 "purity": main_stream_purity(recording.reference, turns, min_main_speech_s)}
        entry.update({f"collar_{c:g}": rates(components[g][index][c]) for c in collars})
        per_recording.append(entry)
    return {"per_recording": per_recording, "summary": summarize(per_recording, collars),
            "chosen_per_fold": {str(fold): grid[g] for fold, g in chosen.items()},
            "all_data_choice": grid[all_data], "grid_size": len(grid),
            "all_data_choice_in_sample_mean_der": float(der[all_data].mean())}


def choose_settings(der: np.ndarray, folds: Sequence[int]) -> tuple[dict[int, int], int]:
    """Per fold, the setting (row of ``der``: settings x recordings) with the lowest mean DER over the
    recordings of the *other* folds (ties: the first setting); and the best setting over all recordings."""
    folds = np.asarray(folds)
    chosen = {int(fold): int(np.argmin(der[:, folds != fold].mean(axis=1))) for fold in np.unique(folds)}
    return chosen, int(np.argmin(der.mean(axis=1)))


def summarize(per_recording: Sequence[Mapping[str, Any]], collars: Sequence[float]) -> dict[str, Any]:
    """Mean and pooled DER (with components) and mean purity, per kind of recording."""
    summary = {}
    for kind in sorted({r["kind"] for r in per_recording}):
        members = [r for r in per_recording if r["kind"] == kind]
        entry: dict[str, Any] = {"recordings": len(members), "hours": sum(r["duration_s"] for r in members) / 3600}
        for collar in collars:
            key = f"collar_{collar:g}"
            pooled = {k: sum(r["components"][key][k] for r in members) for k in ("missed", "false_alarm", "confusion", "total")}
            entry[key] = {"mean_der": float(np.mean([r[key]["der"] for r in members])),
                          "pooled": rates(pooled)}
        entry["missed_s"] = {k: sum(r["missed_s"][k] for r in members) for k in ("overlap", "single", "whole_turns")}
        for policy in PURITY_POLICIES:
            scored = [r["purity"][policy] for r in members if r["purity"][policy]]
            entry[f"purity_{policy}"] = ({k: float(np.mean([s[k] for s in scored])) for k in ("precision", "recall")}
                                         if scored else None)
        summary[kind] = entry
    return summary
