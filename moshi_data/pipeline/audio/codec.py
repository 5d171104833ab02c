"""Mimi audio codes: one loader and one encode function, used by the audio job and the trainer.

Mimi comes from the ``moshi`` package (installed ``--no-deps`` beside torch 2.13 / numpy 2.4, see
scripts/install.sh). ``codec.weights`` in configs/trainer.yaml names the weights:

- a local file (``.safetensors`` or a torch checkpoint): loaded, a missing file is an error;
- a hub repo id (``kyutai/moshiko-pytorch-bf16``, file ``codec.weights_file``): downloaded when the
  hub is reachable; offline the download fails and a randomly initialised Mimi of the real
  architecture stands in, with a loud warning;
- ``null``: the random stand-in directly.

Mimi runs with ``codec.threads`` torch intra-op threads whatever the caller's setting (the audio job
sets ``cpu_threads``, DataLoader workers run on one thread): its float reductions, hence a few codes
at near-ties (~0.2 %), change with the thread count, so stored ``codes.npy`` and on-the-fly codes are
equal only when both are computed with the same count on the same kind of CPU.

The random stand-in is seeded (``codec.random_init_seed``) so every process builds the same codec,
and its codebooks get random centroids (an untrained Mimi has all-zero codebooks, which would map
every frame to code 0). Its codes carry real information about the audio (same encoder
architecture, random projection) but are not the codes of the released model.
"""
from __future__ import annotations

import logging
import math
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

LOG = logging.getLogger(__name__)

SAMPLE_RATE = 24_000
FRAME_SIZE = 1920  # samples per 12.5 Hz frame at 24 kHz
STREAMS = 2  # main, other


@dataclass
class Codec:
    """A loaded Mimi model and where its weights came from (``source`` is logged and reported)."""

    model: Any
    num_codebooks: int
    source: str
    pretrained: bool
    device: str = "cpu"
    threads: int = 1


_THREADS_LOCK = threading.Lock()


@contextmanager
def fixed_threads(threads: int) -> Iterator[None]:
    """Run torch CPU ops with ``threads`` intra-op threads, then restore the caller's count.

    The setting is process-wide; the lock keeps two codec calls in one process from interleaving it.
    """
    with _THREADS_LOCK:
        previous = torch.get_num_threads()
        if previous != threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if previous != threads:
                torch.set_num_threads(previous)


def _calibration_signal(seed: int, seconds: float) -> torch.Tensor:
    """Seeded noise bursts with random levels and spectral tilt: ``[1, 1, samples]`` at 24 kHz."""
    generator = torch.Generator().manual_seed(seed)
    frames = int(seconds * 12.5)
    noise = torch.randn(frames, FRAME_SIZE, generator=generator)
    smooth = torch.rand(frames, 1, generator=generator)  # per-frame low-pass amount (spectral tilt)
    tilted = torch.cumsum(noise, dim=1) * smooth * 0.05 + noise * (1 - smooth)
    levels = 10 ** (-3 * torch.rand(frames, 1, generator=generator))  # 0 to -60 dB
    return (tilted / tilted.std() * levels * 0.1).reshape(1, 1, -1)


def _random_mimi(num_codebooks: int, seed: int, device: str, calibration_seconds: float):
    """Mimi of the real architecture with seeded random weights and data-initialised codebooks.

    An untrained Mimi has all-zero codebooks, so every frame would map to code 0. As Mimi's own
    training does (k-means init of each codebook on its first batch), each RVQ level's centroids
    are drawn from that level's residuals on a seeded calibration signal, with seeded jitter.
    """
    from moshi.models import loaders

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = loaders.get_mimi(None, device=device, num_codebooks=num_codebooks)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        latent = model._encode_to_unquantized_latent(_calibration_signal(seed, calibration_seconds).to(device))
        for rvq in (model.quantizer.rvq_first, model.quantizer.rvq_rest):
            residual = rvq.input_proj(latent)[0].T  # [frames, dimension]
            for layer in rvq.vq.layers:
                codebook = layer._codebook
                points = layer.project_in(residual).cpu()
                picks = torch.randint(points.shape[0], (codebook.codebook_size,), generator=generator)
                jitter = torch.randn(codebook.embedding_sum.shape, generator=generator) * points.std(dim=0) * 0.5
                codebook.embedding_sum.copy_((points[picks] + jitter).to(codebook.embedding_sum.device))
                codebook.cluster_usage.fill_(1.0)
                codebook._initialized.fill_(1.0)
                residual = residual - layer.decode(layer.encode(residual.T[None]))[0].T
    return model


def _is_local_path(weights: str) -> bool:
    """A path (not a hub repo id): exists, starts like a path or ends like a weights file."""
    path = Path(weights).expanduser()
    return path.exists() or weights.startswith((".", "/", "~")) or path.suffix in (".safetensors", ".pt", ".th")


def load_codec(config: Mapping[str, Any]) -> Codec:
    """Load Mimi as ``config`` (the ``codec`` section of configs/trainer.yaml) says."""
    num_codebooks = int(config["num_codebooks"])
    threads = int(config["threads"])
    if threads < 1:
        raise ValueError(f"codec.threads must be >= 1, got {threads}")
    with fixed_threads(threads):
        return _load_codec(config, num_codebooks, threads)


def _load_codec(config: Mapping[str, Any], num_codebooks: int, threads: int) -> Codec:
    from moshi.models import loaders

    device = str(config.get("device") or "cpu")
    weights = str(config["weights"]) if config.get("weights") else None
    seed = int(config["random_init_seed"])
    if weights is None:
        reason = "no Mimi weights configured"
    elif _is_local_path(weights):
        path = Path(weights).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"codec weights not found: {weights}")
        model = loaders.get_mimi(str(path), device=device, num_codebooks=num_codebooks)
        LOG.info("codec: Mimi weights loaded from %s", path)
        return Codec(model, num_codebooks, f"pretrained:{path}", True, device, threads)
    else:
        from huggingface_hub import hf_hub_download

        try:
            path = Path(hf_hub_download(weights, str(config["weights_file"])))
        except Exception as error:  # hub unreachable (offline), unknown repo or file
            first_line = (str(error).splitlines() or [""])[0][:200]
            reason = f"cannot get Mimi weights {weights!r} ({type(error).__name__}: {first_line})"
        else:
            model = loaders.get_mimi(str(path), device=device, num_codebooks=num_codebooks)
            LOG.info("codec: Mimi weights %s downloaded to %s", weights, path)
            return Codec(model, num_codebooks, f"pretrained:{weights}", True, device, threads)
    LOG.warning(
        "codec: %s; using a RANDOMLY INITIALISED Mimi (real architecture, seed %d) -- "
        "its codes are NOT those of the released model",
        reason, seed,
    )
    model = _random_mimi(num_codebooks, seed, device, float(config["calibration_seconds"]))
    return Codec(model, num_codebooks, f"random-init:seed={seed}", False, device, threads)


_LOADED: dict[tuple, Codec] = {}


def shared_codec(config: Mapping[str, Any]) -> Codec:
    """:func:`load_codec`, loaded once per process and config (DataLoader workers, tests)."""
    key = tuple(sorted((name, str(value)) for name, value in config.items()))
    if key not in _LOADED:
        _LOADED[key] = load_codec(config)
    return _LOADED[key]


def code_frames(num_samples: int) -> int:
    """Number of 12.5 Hz code frames Mimi produces for ``num_samples`` samples at 24 kHz."""
    return math.ceil(num_samples / FRAME_SIZE)


@torch.no_grad()
def encode_audio(codec: Codec, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Encode ``[streams, samples]`` audio to int16 codes ``[streams * num_codebooks, frames]``.

    Each stream is encoded alone, its codebooks in order; ``frames = ceil(samples / 1920)``. Runs on
    ``codec.threads`` threads (see the module docstring).
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(f"Mimi expects {SAMPLE_RATE} Hz audio, got {sample_rate} Hz")
    if audio.ndim != 2 or audio.shape[0] == 0:
        raise ValueError(f"expected audio [streams, samples], got shape {audio.shape}")
    if audio.shape[1] == 0:
        raise ValueError("cannot encode empty audio")
    wav = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)).to(codec.device)
    with fixed_threads(codec.threads):
        codes = codec.model.encode(wav[:, None, :])  # [streams, num_codebooks, frames]
    return codes.reshape(audio.shape[0] * codec.num_codebooks, -1).cpu().numpy().astype(np.int16)


def encode_streams(codec: Codec, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Encode ``[2, samples]`` audio (main, other) to int16 codes ``[2 * num_codebooks, frames]``.

    Main stream's codebooks come first (the ``codes.npy`` layout of pipeline/audio/shards.py).
    """
    if audio.ndim != 2 or audio.shape[0] != STREAMS:
        raise ValueError(f"expected audio [2, samples], got shape {audio.shape}")
    return encode_audio(codec, audio, sample_rate)
