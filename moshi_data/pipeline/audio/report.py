"""Run report of the audio job: ``OUTPUT/report.html`` beside stats.json, one self-contained page.

Each recording's contribution is a small, fixed-size dict (:func:`recording_report`: histograms with
fixed bins, sums, DER and word-timing error sums when references are configured), made in the worker
that processed it; the job sums them in a CombineFn (``pipeline.sums``: floats are added as exact
fractions, so the sum does not depend on the order) into stats.json's ``report``, so the report's
state does not grow with the number of recordings or segments. The launcher draws the page once
(:func:`write_run_report`) from stats.json, the per-stage seconds of the job's counters, the filter
thresholds of the config and the pictures of the first few samples.

The page holds wall-clock figures (RTF per stage), so unlike the shards it differs between runs.
"""
from __future__ import annotations

import base64
import html
import io
import itertools
import json
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from moshi_data.pipeline.audio.types import OUTPUT_SAMPLE_RATE
from moshi_data.pipeline.sums import add_sums, finish_sums

REPORT_FILE = "report.html"
# Histogram bins (display choices, not thresholds): name -> (low, high, bins); values are clipped into range.
BINS = {
    "snr_db": (0.0, 60.0, 30),
    "mean_word_confidence": (0.0, 1.0, 20),
    "speech_ratio": (0.0, 1.0, 20),
    "main_share": (0.0, 1.0, 10),
    "words_per_minute": (0.0, 300.0, 30),
    "duration_s": (0.0, 120.0, 24),
    "onset_error_s": (0.0, 1.0, 20),
}
# metric -> (filters key of its threshold, label)
THRESHOLDS = {"snr_db": ("min_snr_db", "SNR (dB)"), "mean_word_confidence": ("min_word_confidence", "mean ASR word confidence"),
              "speech_ratio": ("min_speech_ratio", "speech ratio")}
KEPT, FILTERED = "kept", "filtered"


def histogram(name: str, values: Iterable[float]) -> list[int]:
    low, high, bins = BINS[name]
    data = np.clip(np.asarray([v for v in values if v is not None], dtype=float), low, high - 1e-9)
    return np.histogram(data, bins=bins, range=(low, high))[0].astype(int).tolist()


def _main_share(words: Sequence[Mapping[str, Any]], main: Optional[str]) -> Optional[float]:
    total = sum(max(0.0, w["end"] - w["start"]) for w in words)
    return None if total <= 0 else sum(max(0.0, w["end"] - w["start"]) for w in words if w.get("speaker") == main) / total


def _reference_files(references: str, recording_id: str) -> tuple[Optional[bytes], Optional[bytes]]:
    """The reference RTTM and TextGrid of a recording (``<id>.rttm``, ``<id>.TextGrid``) under ``references``."""
    from moshi_data.pipeline import storage

    found = []
    for suffix in (".rttm", ".TextGrid"):
        path = storage.join(references, recording_id + suffix)
        found.append(storage.read_bytes(path) if storage.exists(path) else None)
    return found[0], found[1]


def reference_scores(recording_id: str, rttm: Optional[str], words_json: Optional[str], references: str,
                     collar: float, word_tiers: Sequence[str]) -> dict:
    """Additive DER and word-onset figures of one recording against its references (empty when it has none)."""
    from types import SimpleNamespace

    from moshi_data.pipeline.audio.diarization_eval import der_components
    from moshi_data.pipeline.audio.evaluate import match_onsets, parse_textgrid, reference_words
    from moshi_data.pipeline.audio.rttm import read_rttm

    reference_rttm, reference_grid = _reference_files(references, recording_id)
    out: dict[str, Any] = {}
    if reference_rttm is not None and rttm is not None:
        reference = [t for turns in read_rttm(reference_rttm.decode("utf-8")).values() for t in turns]
        hypothesis = [t for turns in read_rttm(rttm).values() for t in turns]
        seconds = der_components(reference, hypothesis, collar)
        out["der"] = {"recordings": 1, "reference_speech_s": seconds["total"], "missed_s": seconds["missed"],
                      "false_alarm_s": seconds["false_alarm"], "confusion_s": seconds["confusion"],
                      "errors_s": seconds["missed"] + seconds["false_alarm"] + seconds["confusion"]}
    if reference_grid is not None and words_json is not None:
        tiers = parse_textgrid(reference_grid.decode("utf-8", errors="replace"))
        reference = reference_words(tiers, word_tiers)
        words = [SimpleNamespace(word=w["word"], start=w["start"]) for w in json.loads(words_json)]
        errors, count = match_onsets(reference, words)
        out["word_timing"] = {"recordings": 1, "reference_words": count, "matched_words": len(errors),
                              "sum_error_s": float(sum(errors)), "within_100ms": sum(e <= 0.1 for e in errors),
                              "within_250ms": sum(e <= 0.25 for e in errors),
                              "onset_error_s": histogram("onset_error_s", errors)}
    return out


def recording_report(result, config: Mapping[str, Any]) -> dict:
    """The fixed-size contribution of one processed recording (a ``RecordingResult``) to the run report
    (no wall-clock figure: it is part of stats.json)."""
    counters = result.counters
    report: dict[str, Any] = {"audio_s": counters["audio_samples_in"] / OUTPUT_SAMPLE_RATE}
    if result.outcome == "rejected":
        return report
    speakers = len({line.split()[7] for line in (result.rttm or "").splitlines() if line.startswith("SPEAKER")})
    report["speakers_per_recording"] = {str(speakers): 1}
    kept: dict[str, list] = {name: [] for name in BINS}
    words_kept = 0
    for _, record in result.records:
        meta = json.loads(record["meta.json"])
        words = json.loads(record["words.json"])
        words_kept += len(words)
        filters = meta.get("filters") or {}
        duration = float(meta["duration_s"])
        for name in THRESHOLDS:
            kept[name].append(filters.get(name))
        kept["main_share"].append(_main_share(words, meta.get("main_speaker")))
        kept["words_per_minute"].append(60.0 * len(words) / duration if duration > 0 else None)
        kept["duration_s"].append(duration)
    filtered: dict[str, list] = {name: [] for name in THRESHOLDS}
    for line in result.rejects:
        for name in THRESHOLDS:
            if "segment" in line and "metrics" in line:
                filtered[name].append(line["metrics"].get(name))
    report["kept"] = {name: histogram(name, values) for name, values in kept.items() if name != "onset_error_s"}
    report["filtered"] = {name: histogram(name, values) for name, values in filtered.items()}
    report["samples"] = len(result.records)
    report["words_kept"] = words_kept
    references = config["report"]["references"]
    if references:
        report.update(reference_scores(result.recording_id, result.rttm, result.words_json, references,
                                       float(config["report"]["der_collar"]), config["evaluation"]["word_tiers"]))
    return report


def merge_reports(reports: Iterable[Mapping[str, Any]]) -> dict:
    """Sum of recording reports, the same whatever their order."""
    total: dict[str, Any] = {}
    for report in reports:
        add_sums(total, report)
    return finish_sums(total)


# ------------------------------------------------------------------------------------------ samples
def sample_pictures(shard_path: str, limit: int, annotations: Optional[str], tokenizer: Optional[str]) -> list[tuple[str, dict, bytes]]:
    """(key, inspect row, PNG) of the first ``limit`` samples of a shard (local or remote)."""
    from moshi_data.pipeline import storage
    from moshi_data.pipeline.audio.inspect import render_sample_png, rttm_turns, sample_row, tokenizer_pieces
    from moshi_data.pipeline.audio.shards import decode_sample, stream_records

    pieces = tokenizer_pieces(tokenizer)
    pictures = []
    with storage.open_read(shard_path) as handle:  # a stream: a big (remote) shard costs little
        for record in itertools.islice(stream_records(handle), limit):
            sample = decode_sample(record)
            rttm = None
            if annotations:
                path = storage.join(annotations, f"{sample.meta.get('recording_id')}.rttm")
                rttm = storage.read_bytes(path).decode("utf-8") if storage.exists(path) else None
            turns, source = rttm_turns(sample, rttm, f"{sample.meta.get('recording_id')}.rttm")
            pictures.append((sample.key, sample_row(record), render_sample_png(sample, turns, source, pieces, dpi=60)))
    return pictures


# ------------------------------------------------------------------------------------------ page
def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _bars(axis, name: str, series: Sequence[tuple[str, list[int], str]], threshold: Optional[float], title: str) -> None:
    low, high, bins = BINS[name]
    edges = np.linspace(low, high, bins + 1)
    bottom = np.zeros(bins)
    for label, counts, colour in series:
        counts = np.asarray(counts if counts else [0] * bins, dtype=float)
        axis.bar(edges[:-1], counts, width=edges[1] - edges[0], bottom=bottom, align="edge", color=colour, label=label)
        bottom += counts
    if bottom.max() > 0 and bottom.max() > 20 * max(np.median(bottom[bottom > 0]), 1):
        axis.set_yscale("log")  # one bar dominates
    if threshold is not None:
        axis.axvline(threshold, color="black", linestyle="--", linewidth=1)
        axis.annotate(f"threshold {threshold:g}", (threshold, 1), xycoords=("data", "axes fraction"),
                      xytext=(3, -12), textcoords="offset points", fontsize=8)
    axis.set_title(title, fontsize=9)
    if len(series) > 1:
        axis.legend(fontsize=7)


def render_plots(report: Mapping[str, Any], filters: Mapping[str, Any]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept, filtered = report.get("kept", {}), report.get("filtered", {})
    plots: dict[str, bytes] = {}
    figure, axes = plt.subplots(1, 3, figsize=(14, 3))
    for axis, (name, (key, label)) in zip(axes, THRESHOLDS.items()):
        _bars(axis, name, [("kept", kept.get(name), "#4878a8"), ("filtered (any reason)", filtered.get(name), "#c0504d")],
              filters.get(key), f"{label} per segment")
    figure.tight_layout()
    plots["filters"] = _png(figure)
    plt.close(figure)
    figure, axes = plt.subplots(1, 3, figsize=(14, 3))
    _bars(axes[0], "main_share", [("kept", kept.get("main_share"), "#6a9f58")], None, "main speaker's share of word time per sample")
    _bars(axes[1], "words_per_minute", [("kept", kept.get("words_per_minute"), "#6a9f58")], None, "words per minute per sample")
    _bars(axes[2], "duration_s", [("kept", kept.get("duration_s"), "#6a9f58")], None, "sample duration (s)")
    figure.tight_layout()
    plots["samples"] = _png(figure)
    plt.close(figure)
    return plots


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _outcomes(section: Mapping[str, Any], unit: str) -> list[tuple]:
    total = max(int(section["in"]), 1)
    rows = [("kept", "", section["kept"], f"{100 * section['kept'] / total:.1f} %")]
    for outcome in (FILTERED, "rejected"):
        for reason, n in sorted(section.get(outcome, {}).items(), key=lambda kv: -kv[1]):
            rows.append((outcome, reason, n, f"{100 * n / total:.1f} %"))
    return rows


def render_report(stats: Mapping[str, Any], report: Mapping[str, Any], config: Mapping[str, Any],
                  pictures: Sequence[tuple[str, dict, bytes]] = (), stage_seconds: Mapping[str, float] = ()) -> bytes:
    """The self-contained report page (plots and sample pictures embedded as data URIs);
    ``stage_seconds``: compute seconds per stage summed over workers (the job's counters)."""
    stage_seconds = dict(stage_seconds)
    filters = config.get("filters", {})
    plots = render_plots(report, filters)
    hours = stats.get("audio_hours", {})
    rec, seg = stats["recordings"], stats["segments"]
    audio_s = report.get("audio_s", 0.0)
    stage_rows = [(stage, f"{seconds:.2f}", f"{seconds / audio_s:.4f}" if audio_s else "-")
                  for stage, seconds in sorted(stage_seconds.items(), key=lambda kv: -kv[1]) if seconds > 0]
    total_s = sum(stage_seconds.values())
    stage_rows.append(("all stages", f"{total_s:.2f}", f"{total_s / audio_s:.4f}" if audio_s else "-"))
    speakers = sorted(report.get("speakers_per_recording", {}).items(), key=lambda kv: int(kv[0]))
    kept_minutes = hours.get("kept", 0) * 60
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Audio shards run report</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}img{max-width:100%}"
        "</style></head><body>",
        "<h1>Audio shards run report</h1>",
        f"<p><b>{hours.get('kept', 0):.3f} h</b> kept of {hours.get('decoded', 0):.3f} h decoded "
        f"({100 * hours.get('kept', 0) / max(hours.get('decoded', 0), 1e-12):.1f} %); {rec['kept']} of {rec['in']} recordings and "
        f"{seg['kept']} of {seg['in']} segments kept; {seg.get('samples', report.get('samples', 0))} samples in "
        f"{stats.get('shards', {}).get('count', 0)} shard(s); {report.get('words_kept', 0):,} words kept "
        f"({report.get('words_kept', 0) / kept_minutes:.0f} per minute).</p>" if kept_minutes else
        f"<p>No audio kept: {rec['in']} recordings in, {seg['in']} segments.</p>",
        "<h2>Recordings by outcome</h2>", _table(["outcome", "reason", "recordings", "share"], _outcomes(rec, "recordings")),
        "<h2>Segments by outcome</h2>", _table(["outcome", "reason", "segments", "share"], _outcomes(seg, "segments")),
        "<h2>Speakers per recording</h2>", _table(["speakers (diarization)", "recordings"], speakers),
        "<h2>Filter metrics</h2><p>Per segment; dashed lines are the thresholds of <code>filters</code>. Filtered "
        "segments are stacked in red (the first failing filter decides the reason).</p>", _img(plots["filters"], "filter metrics"),
        "<h2>Kept samples</h2>", _img(plots["samples"], "kept samples"),
        "<h2>Real-time factor per stage</h2><p>Seconds of compute per second of decoded audio (wall time summed over "
        "workers; it varies between runs).</p>", _table(["stage", "seconds", "RTF"], stage_rows),
    ]
    der, timing = report.get("der"), report.get("word_timing")
    if der or timing:
        parts.append("<h2>Against the references</h2>")
    if der:
        speech = max(der["reference_speech_s"], 1e-12)
        parts.append(_table(["recordings", "reference speech (s)", "DER", "missed", "false alarm", "confusion"],
                            [(der["recordings"], f"{der['reference_speech_s']:.1f}", f"{100 * der['errors_s'] / speech:.1f} %",
                              f"{100 * der['missed_s'] / speech:.1f} %", f"{100 * der['false_alarm_s'] / speech:.1f} %",
                              f"{100 * der['confusion_s'] / speech:.1f} %")]))
    if timing:
        matched = max(timing["matched_words"], 1)
        parts.append(_table(["recordings", "reference words", "matched", "mean onset error", "within 100 ms", "within 250 ms"],
                            [(timing["recordings"], timing["reference_words"], timing["matched_words"],
                              f"{1000 * timing['sum_error_s'] / matched:.0f} ms", f"{100 * timing['within_100ms'] / matched:.0f} %",
                              f"{100 * timing['within_250ms'] / matched:.0f} %")]))
    if pictures:
        parts.append("<h2>Samples</h2>")
        for key, row, png in pictures:
            summary = ", ".join(f"{name} {row[name]}" for name in ("duration_s", "speakers", "main_share", "words",
                                                                   "text_frames_non_pad", "snr_db") if row.get(name) is not None)
            parts += [f"<h3>{html.escape(key)}</h3><p>{html.escape(summary)}</p>", _img(png, key)]
    parts.append("</body></html>")
    return "\n".join(parts).encode("utf-8")


def tokenizer_file(spec: Optional[str]) -> Optional[str]:
    """A local file of the configured tokenizer (a repository path, or fetched from object storage),
    or None when it cannot be had: the pictures then show token ids."""
    from moshi_data.pipeline import storage
    from moshi_data.pipeline.audio.recording import resolve_repo_path
    from moshi_data.pipeline.models import resolve_model

    if not spec:
        return None
    if storage.is_local(spec):
        path = resolve_repo_path(spec)
        return str(path) if path.exists() else None
    try:
        return str(resolve_model(spec))
    except Exception:  # noqa: BLE001 - the page is still drawn, with token ids
        return None


def write_run_report(output: str, stats: Mapping[str, Any], config: Mapping[str, Any],
                     stage_seconds: Mapping[str, float] = ()) -> str:
    """Render and write ``OUTPUT/report.html`` (on the launcher, once the job has ended): stats.json's
    summed ``report`` plus pictures of the first ``report.samples`` samples of the first shard (read
    as a stream, so a big shard costs little). ``config``: the launcher's (tokenizer as configured,
    not the staged URL workers got)."""
    from moshi_data.pipeline import storage

    pictures = []
    limit = int(config["report"]["samples"])
    first = (stats.get("shards") or {}).get("first")
    if limit > 0 and first:
        pictures = sample_pictures(storage.join(output, "shards", first), limit, storage.join(output, "annotations"),
                                   tokenizer_file(config["text"]["tokenizer"]))
    path = storage.join(output, REPORT_FILE)
    storage.write_bytes_atomic(path, render_report(stats, stats.get("report", {}), config, pictures, stage_seconds))
    return path
