"""Look inside audio shards: one summary row per sample, and a picture of one sample.

The row of a sample is computed from its ``meta.json``, ``words.json`` and ``text.npy`` (the FLAC is
not decoded). "Main speaker share" is the main speaker's share of the sample's word time (the sum of
word durations), since a shard holds words, not turns. The picture shows both streams' waveforms, the
diarization turns (from ``OUTPUT/annotations/<id>.rttm`` when the shard sits in a job output, else
rebuilt from the words), every word at its time, and the text tokens on the 12.5 Hz frames.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from moshi_data.pipeline.audio.shards import Sample, decode_sample
from moshi_data.pipeline.audio.types import FRAME_RATE, Turn

SHARDS_DIR = "shards"
ANNOTATIONS_DIR = "annotations"
STATS_FILE = "stats.json"
# gids of the artists the picture draws, counted into the PNG's metadata (checked by the tests)
WORD_GID, TOKEN_GID, TURN_GID = "word", "token", "turn"
PNG_INFO_KEY = "moshi-data"


class InspectError(ValueError):
    """Bad input to an inspect command (shown to the user as one line)."""


def is_audio_output(path: Path) -> bool:
    return path.suffix == ".tar" or (path / SHARDS_DIR).is_dir() or (path.is_dir() and any(path.glob("shard-*.tar")))


def shard_files(path: str | Path) -> list[Path]:
    """The shard .tar files of a job output folder, a shards/ folder, or one shard."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".tar":
            raise InspectError(f"{path}: not a shard (.tar)")
        return [path]
    folder = path / SHARDS_DIR if (path / SHARDS_DIR).is_dir() else path
    shards = sorted(folder.glob("shard-*.tar"))
    if not shards and not (path / STATS_FILE).exists():
        raise InspectError(f"{path}: no audio shards here (expected a job output with shards/, or shard-*.tar)")
    return shards


def output_folder(path: str | Path) -> Optional[Path]:
    """The job output folder a shard or shards/ folder belongs to (the one holding stats.json), if any."""
    path = Path(path).resolve()
    for candidate in (path, path.parent, path.parent.parent):
        if (candidate / STATS_FILE).exists() and (candidate / SHARDS_DIR).is_dir():
            return candidate
    return None


def iter_records(shard: Path) -> Iterator[dict[str, Any]]:
    """Raw WebDataset records of a shard, in file order."""
    try:
        import webdataset as wds
    except ImportError as error:  # a text-only install (make install-text)
        raise InspectError("reading audio shards needs the audio dependencies: run `make install-audio`") from error

    try:
        yield from wds.WebDataset(str(shard), shardshuffle=False, empty_check=False)
    except Exception as error:  # noqa: BLE001 - a damaged tar is reported with its name
        raise InspectError(f"{shard}: cannot read shard ({error})") from error


def main_speaker_share(words: Sequence[Mapping[str, Any]], main: Optional[str]) -> Optional[float]:
    """Main speaker's share of the word time; None without words."""
    total = sum(max(0.0, w["end"] - w["start"]) for w in words)
    if total <= 0:
        return None
    return sum(max(0.0, w["end"] - w["start"]) for w in words if w.get("speaker") == main) / total


def sample_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """Key, duration, speakers, main speaker share, words and non-PAD text frames of one raw record."""
    key = record.get("__key__", "<no key>")
    try:
        meta = json.loads(record["meta.json"])
        words = json.loads(record["words.json"])
        text = np.load(io.BytesIO(record["text.npy"]), allow_pickle=False)
    except KeyError as error:
        raise InspectError(f"sample {key}: missing {error.args[0]}") from error
    pad = meta.get("text", {}).get("pad_id", 3)
    share = main_speaker_share(words, meta.get("main_speaker"))
    row = {
        "key": key,
        "duration_s": round(float(meta.get("duration_s", text.size / FRAME_RATE)), 3),
        "speakers": len({w.get("speaker") for w in words}),
        "main_speaker": meta.get("main_speaker"),
        "main_share": None if share is None else round(share, 3),
        "words": len(words),
        "text_frames": int(text.size),
        "text_frames_non_pad": int((text != pad).sum()),
    }
    if "other_text.npy" in record:
        other = np.load(io.BytesIO(record["other_text.npy"]), allow_pickle=False)
        row["other_text_frames_non_pad"] = int((other != pad).sum())
    filters = meta.get("filters") or {}
    for name in ("snr_db", "mean_word_confidence", "speech_ratio"):
        if name in filters:
            row[name] = filters[name]
    return row


def inspect_audio(path: str | Path, limit: Optional[int] = None) -> dict[str, Any]:
    """Everything ``moshi-data inspect`` prints for audio shards, as a dict."""
    shards = shard_files(path)
    result: dict[str, Any] = {"kind": "audio", "input": str(path), "shards": [str(s) for s in shards], "rows": []}
    folder = output_folder(path)
    if folder is not None:
        stats = json.loads((folder / STATS_FILE).read_text("utf-8"))
        result["stats"] = {k: stats[k] for k in ("recordings", "segments", "audio_hours") if k in stats}
    total = 0
    for shard in shards:
        for record in iter_records(shard):
            total += 1
            if limit is None or len(result["rows"]) < limit:
                result["rows"].append(sample_row(record))
    result["samples"] = total
    return result


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_audio(result: Mapping[str, Any]) -> str:
    """The human-readable page of :func:`inspect_audio`."""
    lines = [f"audio output {result['input']}: {len(result['shards'])} shard(s), {result['samples']} samples"]
    stats = result.get("stats")
    if stats:
        rec, seg, hours = stats["recordings"], stats["segments"], stats.get("audio_hours", {})
        lines += ["", f"recordings: in {rec['in']}, kept {rec['kept']}, filtered {rec['filtered']}, rejected {rec['rejected']}",
                  f"segments: in {seg['in']}, kept {seg['kept']}, filtered {seg['filtered']}",
                  f"hours: decoded {hours.get('decoded', 0):.4f}, kept {hours.get('kept', 0):.4f}"]
    header = f"{'key':<40} {'dur_s':>7} {'spk':>3} {'main':>5} {'words':>5} {'text':>5} {'snr_db':>6} {'conf':>5}"
    lines += ["", header, "-" * len(header)]
    for row in result["rows"]:
        lines.append(f"{row['key']:<40} {row['duration_s']:>7.2f} {row['speakers']:>3} {_fmt(row['main_share'], '.2f'):>5} "
                     f"{row['words']:>5} {row['text_frames_non_pad']:>5} {_fmt(row.get('snr_db'), '.1f'):>6} "
                     f"{_fmt(row.get('mean_word_confidence'), '.2f'):>5}")
    if len(result["rows"]) < result["samples"]:
        lines.append(f"... {result['samples'] - len(result['rows'])} more (--limit)")
    lines.append("columns: main = main speaker's share of word time, text = non-PAD frames of text.npy (12.5 Hz)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- one sample
def find_sample(path: str | Path, key: str) -> Sample:
    """Decode the sample ``key`` of a shard (or of any shard of an output folder)."""
    seen = 0
    for shard in shard_files(path):
        for record in iter_records(shard):
            seen += 1
            if record.get("__key__") == key:
                return decode_sample(record)
    raise InspectError(f"no sample {key!r} in {path} ({seen} samples; `moshi-data inspect {path}` lists the keys)")


def rttm_turns(sample: Sample, rttm: Optional[str], name: str = "RTTM") -> tuple[list[Turn], str]:
    """Turns inside the sample's window (seconds from its start) and where they came from: the
    recording's RTTM text when given, else turns rebuilt from the sample's words."""
    from moshi_data.pipeline.audio.rttm import read_rttm

    meta = sample.meta
    if rttm is not None:
        start, end = float(meta["offset_s"]), float(meta["end_s"])
        turns = [t for turns in read_rttm(rttm).values() for t in turns]
        clipped = [Turn(round(max(t.start, start) - start, 3), round(min(t.end, end) - start, 3), t.speaker)
                   for t in turns if t.end > start and t.start < end]
        return clipped, f"diarization turns ({name})"
    by_speaker: dict[str, list[list[float]]] = {}
    for word in sorted(sample.words, key=lambda w: w["start"]):
        spans = by_speaker.setdefault(word.get("speaker") or "?", [])
        if spans and word["start"] - spans[-1][1] <= 0.5:
            spans[-1][1] = max(spans[-1][1], word["end"])
        else:
            spans.append([word["start"], word["end"]])
    turns = [Turn(s, e, speaker) for speaker, spans in by_speaker.items() for s, e in spans]
    return sorted(turns, key=lambda t: (t.start, t.speaker)), "turns rebuilt from the words (no RTTM beside the shard)"


def sample_turns(sample: Sample, shard_path: str | Path) -> tuple[list[Turn], str]:
    """:func:`rttm_turns` with ``OUTPUT/annotations/<id>.rttm`` when the shard sits in a job output."""
    folder = output_folder(shard_path)
    rttm = folder / ANNOTATIONS_DIR / f"{sample.meta.get('recording_id')}.rttm" if folder else None
    if rttm is not None and rttm.exists():
        return rttm_turns(sample, rttm.read_text("utf-8"), rttm.name)
    return rttm_turns(sample, None)


def token_labels(tokens: np.ndarray, pad_id: int, epad_id: int, pieces=None) -> list[tuple[int, str]]:
    """(frame, label) of every non-PAD frame: the SentencePiece piece (or the id), EPAD shown as 'EPAD'."""
    labels = []
    for frame, token in enumerate(tokens.tolist()):
        if token == pad_id:
            continue
        if token == epad_id:
            labels.append((frame, "EPAD"))
        else:
            labels.append((frame, pieces(token) if pieces else str(token)))
    return labels


def render_sample_png(sample: Sample, turns: Sequence[Turn], turns_source: str, pieces=None, dpi: int = 80) -> bytes:
    """PNG of one sample: waveforms, turns, words, text tokens. The PNG's text chunk ``moshi-data``
    holds the number of word, token and turn marks drawn (JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image, PngImagePlugin

    meta = sample.meta
    main = meta.get("main_speaker")
    rate = sample.sample_rate
    duration = sample.audio.shape[1] / rate
    pad_id, epad_id = meta.get("text", {}).get("pad_id", 3), meta.get("text", {}).get("epad_id", 0)
    speakers = sorted({t.speaker for t in turns} | {w.get("speaker") or "?" for w in sample.words},
                      key=lambda s: (s != main, s))
    palette = plt.get_cmap("tab10")
    colour = {speaker: palette(i % 10) for i, speaker in enumerate(speakers)}
    width = float(np.clip(duration * 0.9, 12, 80))
    streams = [("text (main)", sample.text)] + ([("text (other)", sample.other_text)] if sample.other_text is not None else [])
    heights = [1.4, 1.4, 0.25 * max(1, len(speakers)) + 0.5, 1.3] + [1.2] * len(streams)
    figure, axes = plt.subplots(len(heights), 1, figsize=(width, sum(heights) + 0.8), sharex=True,
                                gridspec_kw={"height_ratios": heights})
    time = np.arange(sample.audio.shape[1]) / rate
    step = max(1, sample.audio.shape[1] // 20000)  # enough points for the eye, small PNG
    for axis, channel, name in ((axes[0], 0, f"main stream ({main})"), (axes[1], 1, "other stream")):
        axis.plot(time[::step], sample.audio[channel, ::step], linewidth=0.5, color="#335" if channel == 0 else "#733")
        axis.set_ylabel(name, rotation=0, ha="right", fontsize=8)
        peak = float(np.abs(sample.audio).max()) or 1.0  # both streams on one scale, zoomed to the loudest
        axis.set_ylim(-1.05 * peak, 1.05 * peak)
    axis = axes[2]
    for turn in turns:
        row = speakers.index(turn.speaker) if turn.speaker in speakers else 0
        axis.broken_barh([(turn.start, turn.end - turn.start)], (row - 0.4, 0.8), color=colour.get(turn.speaker, "grey"), gid=TURN_GID)
    axis.set_yticks(range(len(speakers)), [f"{s}{' (main)' if s == main else ''}" for s in speakers], fontsize=8)
    axis.set_ylim(len(speakers) - 0.5, -0.5)
    axis.set_title(turns_source, fontsize=8, loc="left")
    axis = axes[3]
    for index, word in enumerate(sample.words):
        speaker = word.get("speaker") or "?"
        level = index % 3
        axis.axvspan(word["start"], word["end"], ymin=0, ymax=0.15, color=colour.get(speaker, "grey"), alpha=0.6)
        axis.text(word["start"], 0.3 + 0.22 * level, word["word"], fontsize=7, color=colour.get(speaker, "black"), gid=WORD_GID)
    axis.set_ylim(0, 1)
    axis.set_yticks([])
    axis.set_ylabel("words", rotation=0, ha="right", fontsize=8)
    token_marks = 0
    for axis, (name, tokens) in zip(axes[4:], streams):
        labels = token_labels(np.asarray(tokens), pad_id, epad_id, pieces)
        frames = np.arange(len(tokens)) / FRAME_RATE
        axis.vlines(frames, 0, 0.08, color="#ccc", linewidth=0.4)  # every 80 ms frame
        for index, (frame, label) in enumerate(labels):
            x = frame / FRAME_RATE
            axis.vlines(x, 0, 0.2, color="#c00" if label == "EPAD" else "#060", linewidth=0.8)
            axis.text(x, 0.25 + 0.25 * (index % 3), label, fontsize=6, rotation=90, va="bottom",
                      color="#c00" if label == "EPAD" else "#060", gid=TOKEN_GID)
            token_marks += 1
        axis.set_ylim(0, 1.2)
        axis.set_yticks([])
        axis.set_ylabel(f"{name}\n12.5 Hz", rotation=0, ha="right", fontsize=8)
    axes[-1].set_xlim(0, duration)
    axes[-1].set_xlabel("seconds from the sample's start")
    figure.suptitle(f"{sample.key}: {duration:.2f} s from {meta.get('recording_id')} at {meta.get('offset_s', 0):.2f} s, "
                    f"{len(sample.words)} words", fontsize=10)
    figure.tight_layout()
    counts = {"words": sum(1 for a in figure.findobj(lambda o: o.get_gid() == WORD_GID)),
              "tokens": token_marks, "turns": sum(1 for a in figure.findobj(lambda o: o.get_gid() == TURN_GID))}
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    plt.close(figure)
    image = Image.open(io.BytesIO(buffer.getvalue()))
    info = PngImagePlugin.PngInfo()
    info.add_text(PNG_INFO_KEY, json.dumps(counts, sort_keys=True))
    out = io.BytesIO()
    image.save(out, format="png", pnginfo=info)
    return out.getvalue()


def png_marks(png: bytes) -> dict[str, int]:
    """The mark counts :func:`render_sample_png` stored in a PNG."""
    from PIL import Image

    return json.loads(Image.open(io.BytesIO(png)).text[PNG_INFO_KEY])


def stereo_wav(sample: Sample) -> bytes:
    """The sample's two streams as a 16-bit stereo WAV (left = main, right = other)."""
    import soundfile as sf

    buffer = io.BytesIO()
    sf.write(buffer, sample.audio.T, sample.sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def tokenizer_pieces(model_path: Optional[str]):
    """id -> piece function of a SentencePiece model, or None when there is no model."""
    if not model_path or not Path(model_path).exists():
        return None
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
    size = processor.get_piece_size()
    return lambda token: processor.id_to_piece(token) if 0 <= token < size else f"?{token}"
