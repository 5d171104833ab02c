"""Output side of the audio shards job: atomic writes (local or remote), shard buckets, stats and rejects.

Everything here is a pure function of its inputs, so the job's outputs do not depend on the worker
count or on the order in which recordings finish.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from moshi_data.pipeline import storage
from moshi_data.pipeline.audio.shards import write_records
from moshi_data.pipeline.audio.types import OUTPUT_SAMPLE_RATE

SHARDS_DIR = "shards"
ANNOTATIONS_DIR = "annotations"
STATS_FILE = "stats.json"
REJECTS_FILE = "rejects.jsonl"


def is_remote(path: str) -> bool:
    return "://" in path


def join(base: str, *parts: str) -> str:
    if is_remote(base):
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(base, *parts)
    return os.path.join(base, *parts)


def write_bytes_atomic(path: str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` through a temporary name and a rename (local or any Beam filesystem)."""
    temporary = path + ".tmp"
    if is_remote(path):  # object stores publish an object only once its upload completes
        storage.write_bytes_atomic(path, payload)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(temporary, "wb") as handle:
        handle.write(payload)
    os.replace(temporary, path)


def bucket_of(recording_id: str, buckets: int) -> int:
    """Stable shard group of a recording (sha256 of its id, not Python's salted hash)."""
    return int.from_bytes(hashlib.sha256(recording_id.encode("utf-8")).digest()[:8], "big") % max(1, buckets)


def write_bucket(output: str, bucket: int, records: Iterable[tuple[str, dict[str, Any]]], max_bytes: int, stride: int) -> list[str]:
    """Write one bucket's records sorted by key as ``shard-%06d.tar`` from index ``bucket * stride``."""
    ordered = sorted(records, key=lambda item: item[0])
    keys = [key for key, _ in ordered]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate sample keys in bucket {bucket}")
    shards_dir = join(output, SHARDS_DIR)
    if not is_remote(output):
        return [p.name for p in write_records((r for _, r in ordered), shards_dir, max_bytes, bucket * stride)]
    with tempfile.TemporaryDirectory() as local:
        written = write_records((r for _, r in ordered), local, max_bytes, bucket * stride)
        for shard in written:
            storage.upload_file(str(shard), join(shards_dir, shard.name))
        return [p.name for p in written]


def annotation_files(recording_id: str, rttm: str | None, words_json: str | None) -> list[tuple[str, bytes]]:
    """(relative path, payload) of a recording's annotations."""
    files = []
    if rttm is not None:
        files.append((f"{ANNOTATIONS_DIR}/{recording_id}.rttm", rttm.encode("utf-8")))
    if words_json is not None:
        files.append((f"{ANNOTATIONS_DIR}/{recording_id}.words.json", words_json.encode("utf-8")))
    return files


def build_stats(summaries: Sequence[Mapping[str, Any]], listing_rejects: Sequence[Mapping[str, Any]], shards: Sequence[str]) -> dict[str, Any]:
    """Aggregate per-recording summaries; asserts in = kept + filtered + rejected (recordings and segments)."""
    counters: Counter = Counter()
    recordings = {"in": len(listing_rejects), "kept": 0, "filtered": Counter(), "rejected": Counter()}
    for reject in listing_rejects:
        recordings["rejected"][reject["reason"]] += 1
    for summary in summaries:
        counters.update(summary["counters"])
        recordings["in"] += 1
        if summary["outcome"] == "kept":
            recordings["kept"] += 1
        else:
            recordings[summary["outcome"]][summary["reason"]] += 1
    segment_filtered = {k[len("segments_filtered_"):]: v for k, v in counters.items() if k.startswith("segments_filtered_")}
    stats = {
        "recordings": {
            "in": recordings["in"],
            "kept": recordings["kept"],
            "filtered": dict(sorted(recordings["filtered"].items())),
            "rejected": dict(sorted(recordings["rejected"].items())),
        },
        "segments": {
            "in": counters["segments_in"],
            "kept": counters["segments_kept"],
            "samples": counters["samples_kept"],  # > kept with streams.main_speaker=each (one sample per main speaker)
            "filtered": dict(sorted(segment_filtered.items())),
            "cuts": {k[len("segment_cut_"):]: v for k, v in sorted(counters.items()) if k.startswith("segment_cut_")},
        },
        "audio_hours": {
            "decoded": round(counters["audio_samples_in"] / OUTPUT_SAMPLE_RATE / 3600, 6),
            "kept": round(counters["samples_kept_24k"] / OUTPUT_SAMPLE_RATE / 3600, 6),
        },
        "flags": {"downmixed_multichannel": counters["downmixed_multichannel"], "upsampled": counters["upsampled"]},
        "shards": sorted(shards),
    }
    rec = stats["recordings"]
    assert rec["in"] == rec["kept"] + sum(rec["filtered"].values()) + sum(rec["rejected"].values()), rec
    seg = stats["segments"]
    assert seg["in"] == seg["kept"] + sum(seg["filtered"].values()), seg
    return stats


def rejects_jsonl(lines: Iterable[Mapping[str, Any]]) -> bytes:
    """Reject lines sorted by (id, segment, stage, reason), one JSON object per line."""
    ordered = sorted(lines, key=lambda r: (str(r.get("id")), r.get("segment", -1), r["stage"], r["reason"], str(r.get("path"))))
    return "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in ordered).encode("utf-8")


def stale_outputs(output: str, shards: Sequence[str], recording_ids: Sequence[str]) -> list[str]:
    """Files under ``output`` that this run did not write (left by an earlier, different run or a killed one)."""
    if is_remote(output):
        from apache_beam.io.filesystems import FileSystems

        found = [m.path for m in FileSystems.match([join(output, "**")])[0].metadata_list]
    else:
        found = [str(p) for p in Path(output).rglob("*") if p.is_file()]
    keep_shards = {join(output, SHARDS_DIR, name) for name in shards}
    keep_annotations = {join(output, path) for rid in recording_ids for path, _ in annotation_files(rid, "", "")}
    stale = []
    for path in found:
        if path.endswith(".tmp"):
            stale.append(path)
        elif f"/{SHARDS_DIR}/" in path and os.path.basename(path).startswith("shard-") and path not in keep_shards:
            stale.append(path)
        elif f"/{ANNOTATIONS_DIR}/" in path and path not in keep_annotations:
            stale.append(path)
    return sorted(stale)

