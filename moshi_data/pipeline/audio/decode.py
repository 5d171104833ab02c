"""Stage 1, ingest: list recordings (folder, glob or JSONL manifest; local or s3) and decode them.

Decoding goes through the ``ffmpeg`` CLI, which reads wav, flac, mp3, opus/ogg, m4a/aac, webm... by
content (a wrong extension does not matter). The PCM stream is read in chunks into one array sized
from the probed duration, so memory stays at the size of the decoded audio itself. Native mono and
stereo are kept; more channels are downmixed to mono (or rejected, per config). Audio is delivered
at 24 kHz (output) and 16 kHz (models), both resampled by ffmpeg.

Bad input raises :class:`AudioRejected` with a short machine reason and a human detail.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, Iterator, Mapping, Optional

import numpy as np

from moshi_data.pipeline.audio.types import MODEL_SAMPLE_RATE, OUTPUT_SAMPLE_RATE

_BYTES_PER_SAMPLE = 4  # float32


class AudioRejected(Exception):
    """A recording that cannot be used; ``reason`` is a short key counted in stats.json."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AudioSource:
    """One input recording: its id (file name without extension unless the manifest says otherwise)."""

    recording_id: str
    path: str
    speakers: Optional[tuple[str, ...]] = None


@dataclass
class DecodedAudio:
    """Decoded recording: ``audio24`` is ``[channels, n]`` at 24 kHz, ``audio16`` ``[channels, m]`` at 16 kHz."""

    audio24: np.ndarray
    audio16: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.audio24.shape[1] / OUTPUT_SAMPLE_RATE


# ------------------------------------------------------------------------------------------ listing
def recording_id_for(path: str) -> str:
    """Recording id of a file: its name without the (last) extension."""
    name = PurePosixPath(path.replace("\\", "/")).name
    return name.rsplit(".", 1)[0] if "." in name[1:] else name


def _is_audio(path: str, extensions: list[str]) -> bool:
    return path.lower().rsplit(".", 1)[-1] in {e.lower() for e in extensions} if "." in path else False


def _match(pattern: str) -> list[str]:
    from apache_beam.io.filesystems import FileSystems

    results = FileSystems.match([pattern])[0].metadata_list
    return sorted(m.path for m in results)


def _read_manifest(path: str) -> list[dict[str, Any]]:
    from apache_beam.io.filesystems import FileSystems

    base = path.rsplit("/", 1)[0] if "/" in path else "."
    entries = []
    with FileSystems.open(path) as handle:
        for number, line in enumerate(handle.read().decode("utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                entries.append({"_error": f"manifest line {number}: {error}"})
                continue
            if not isinstance(entry, dict) or "path" not in entry:
                entries.append({"_error": f"manifest line {number}: no 'path'"})
                continue
            audio_path = str(entry["path"])
            if "://" not in audio_path and not os.path.isabs(audio_path):
                audio_path = FileSystems.join(base, audio_path)
            entry["path"] = audio_path
            entries.append(entry)
    return entries


def list_sources(input_spec: str, extensions: list[str]) -> tuple[list[AudioSource], list[dict[str, Any]]]:
    """Expand a folder, glob or ``.jsonl`` manifest into sources (sorted by id) and listing rejects.

    A folder contributes every file with an audio extension (recursively); a glob or manifest names
    files explicitly, whatever their extension. Later files repeating an id are rejected.
    """
    from apache_beam.io.filesystems import FileSystems

    rejects: list[dict[str, Any]] = []
    entries: list[dict[str, Any]]
    if input_spec.endswith(".jsonl"):
        entries = _read_manifest(input_spec)
    elif any(ch in input_spec for ch in "*?["):
        entries = [{"path": p} for p in _match(input_spec)]
    else:
        root = input_spec.rstrip("/")
        if "://" not in root and os.path.isdir(root):
            paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)
            entries = [{"path": p} for p in paths if _is_audio(p, extensions)]
        elif "://" in root and not FileSystems.exists(root):  # an s3 "folder"
            entries = [{"path": p} for p in _match(root + "/**") if _is_audio(p, extensions)]
        elif FileSystems.exists(root):  # one file, whatever its extension
            entries = [{"path": root}]
        else:
            raise FileNotFoundError(f"input not found: {input_spec}")
    sources: list[AudioSource] = []
    seen: dict[str, str] = {}
    for entry in entries:
        if "_error" in entry:
            rejects.append({"id": None, "path": input_spec, "stage": "ingest", "reason": "bad_manifest_line", "detail": entry["_error"]})
            continue
        recording_id = str(entry.get("id") or recording_id_for(entry["path"]))
        if recording_id in seen:
            rejects.append({
                "id": recording_id, "path": entry["path"], "stage": "ingest", "reason": "duplicate_recording_id",
                "detail": f"id already used by {seen[recording_id]}",
            })
            continue
        seen[recording_id] = entry["path"]
        speakers = entry.get("speakers")
        sources.append(AudioSource(recording_id, entry["path"], tuple(str(s) for s in speakers) if isinstance(speakers, list) else None))
    sources.sort(key=lambda s: s.recording_id)
    return sources, rejects


# ------------------------------------------------------------------------------------------ decoding
@contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local file path for ``path``: itself if local, else a streamed temporary copy (s3, gs...)."""
    if "://" not in path:
        if not os.path.isfile(path):
            raise AudioRejected("missing_file", f"no such file: {path}")
        yield path
        return
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        raise AudioRejected("missing_file", f"no such object: {path}")

    suffix = "." + path.rsplit(".", 1)[-1] if "." in path.rsplit("/", 1)[-1] else ""
    handle, local = tempfile.mkstemp(suffix=suffix)
    try:
        with os.fdopen(handle, "wb") as out, FileSystems.open(path) as remote:
            shutil.copyfileobj(remote, out, length=1 << 20)
        yield local
    finally:
        os.unlink(local)


def probe(path: str, timeout_s: float) -> dict[str, Any]:
    """ffprobe the first audio stream: codec, channels, sample rate, declared duration, format."""
    command = [
        "ffprobe", "-v", "error", "-select_streams", "a:0", "-of", "json",
        "-show_entries", "stream=codec_name,channels,sample_rate,duration:format=format_name,duration", path,
    ]
    try:
        result = subprocess.run(command, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise AudioRejected("decode_error", f"ffprobe timed out after {timeout_s}s") from error
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioRejected("decode_error", message[-1] if message else f"ffprobe exit {result.returncode}")
    data = json.loads(result.stdout or b"{}")
    streams = data.get("streams") or []
    if not streams:
        raise AudioRejected("no_audio_stream", "no audio stream in file")
    stream, container = streams[0], data.get("format", {})
    duration = stream.get("duration") or container.get("duration")
    return {
        "codec": stream.get("codec_name"),
        "channels": int(stream.get("channels") or 0),
        "sample_rate": int(stream.get("sample_rate") or 0),
        "declared_duration": float(duration) if duration not in (None, "N/A") else None,
        "format": container.get("format_name"),
    }


def read_pcm(path: str, sample_rate: int, channels: int, expected_seconds: Optional[float], chunk_bytes: int, timeout_s: float) -> np.ndarray:
    """Decode to float32 ``[channels, n]`` at ``sample_rate``.

    ffmpeg's interleaved output is read chunk by chunk and de-interleaved straight into one array
    sized from the probed duration, so peak memory is the decoded audio plus one chunk.
    """
    command = [
        "ffmpeg", "-nostdin", "-v", "error", "-i", path, "-map", "0:a:0", "-vn",
        "-ac", str(channels), "-ar", str(sample_rate), "-f", "f32le", "-acodec", "pcm_f32le", "-",
    ]
    frame_bytes = channels * _BYTES_PER_SAMPLE
    chunk_bytes -= chunk_bytes % frame_bytes
    audio = np.empty((channels, int(((expected_seconds or 0.0) + 1.0) * sample_rate)), dtype=np.float32)
    chunk = bytearray(chunk_bytes)
    filled = 0  # frames written to ``audio``
    carry = 0  # bytes of an incomplete frame kept at the start of ``chunk``
    with tempfile.TemporaryFile() as errors:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors)
        assert process.stdout is not None
        with memoryview(chunk) as view:
            while True:
                read = process.stdout.readinto(view[carry:])
                if not read:
                    break
                available = carry + read
                frames = available // frame_bytes
                if filled + frames > audio.shape[1]:  # probe under-estimated: grow by half
                    audio = np.concatenate([audio, np.empty((channels, audio.shape[1] // 2 + frames), np.float32)], axis=1)
                block = np.frombuffer(chunk, dtype=np.float32, count=frames * channels).reshape(frames, channels)
                audio[:, filled : filled + frames] = block.T
                filled += frames
                carry = available - frames * frame_bytes
                view[:carry] = view[frames * frame_bytes : available]
        try:
            code = process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as error:
            process.kill()
            raise AudioRejected("decode_error", "ffmpeg did not finish") from error
        errors.seek(0)
        message = errors.read().decode("utf-8", "replace").strip().splitlines()
    if code != 0:
        raise AudioRejected("decode_error", message[-1] if message else f"ffmpeg exit {code}")
    return audio[:, :filled]  # a view: no second copy of the audio


def decode(path: str, config: Mapping[str, Any]) -> DecodedAudio:
    """Decode one recording per the ``ingest`` config section; raises :class:`AudioRejected`."""
    with local_copy(path) as local:
        if os.path.getsize(local) == 0:
            raise AudioRejected("empty_file", "file has 0 bytes")
        info = probe(local, config["ffprobe_timeout_s"])
        declared = info["declared_duration"]
        if info["channels"] < 1 or info["sample_rate"] < 1:
            raise AudioRejected("decode_error", f"unreadable stream parameters {info}")
        if info["sample_rate"] < config["min_sample_rate"]:
            raise AudioRejected("sample_rate_too_low", f"{info['sample_rate']} Hz < {config['min_sample_rate']} Hz")
        if declared is not None and declared > config["max_duration_s"]:
            raise AudioRejected("too_long", f"{declared:.0f}s > {config['max_duration_s']}s")
        channels = info["channels"]
        if channels > 2:
            if config["multichannel"] == "reject":
                raise AudioRejected("too_many_channels", f"{channels} channels")
            info["downmixed_from_channels"] = channels
            channels = 1
        timeout = config["ffmpeg_timeout_s"]
        audio24 = read_pcm(local, OUTPUT_SAMPLE_RATE, channels, declared, config["read_chunk_bytes"], timeout)
        if audio24.shape[1] == 0:
            raise AudioRejected("empty_audio", "no samples decoded")
        decoded_s = audio24.shape[1] / OUTPUT_SAMPLE_RATE
        if decoded_s > config["max_duration_s"]:
            raise AudioRejected("too_long", f"{decoded_s:.0f}s > {config['max_duration_s']}s")
        if declared is not None and declared - decoded_s > max(
            config["truncation_tolerance_s"], config["truncation_tolerance_ratio"] * declared
        ):
            raise AudioRejected("truncated", f"decoded {decoded_s:.2f}s of the declared {declared:.2f}s")
        audio16 = read_pcm(local, MODEL_SAMPLE_RATE, channels, decoded_s, config["read_chunk_bytes"], timeout)
    if not np.isfinite(audio24).all():
        raise AudioRejected("decode_error", "non-finite samples")
    info.update({"channels_kept": channels, "decoded_duration": round(decoded_s, 6)})
    return DecodedAudio(audio24, audio16, info)
