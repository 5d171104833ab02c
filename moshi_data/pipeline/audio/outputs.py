"""Output side of the audio shards job: shard buckets, per-recording tallies, stats and reject parts.

Everything here is a pure function of its inputs, so the job's outputs do not depend on the worker
count or on the order in which recordings finish. Paths and atomic writes are ``pipeline.storage``'s.
What grows with the number of recordings is split by a stable hash: shards into buckets of about one
shard's worth of samples (:func:`shard_buckets`), rejects into parts of a bounded number of recordings
(:func:`reject_parts`); the stats are sums of fixed-size tallies (:func:`recording_tally`).
"""
from __future__ import annotations

import hashlib
import json
import math
import tempfile
from typing import Any, Iterable, Mapping, Optional

from moshi_data.pipeline import storage
from moshi_data.pipeline.audio.shards import write_records
from moshi_data.pipeline.audio.types import OUTPUT_SAMPLE_RATE

SHARDS_DIR = "shards"
ANNOTATIONS_DIR = "annotations"
REJECTS_DIR = "rejects"
REJECTS_PATTERN = "part-%06d.jsonl"
STATS_FILE = "stats.json"
DIGEST_MODULUS = 1 << 256


def _id_hash(recording_id: str) -> int:
    return int.from_bytes(hashlib.sha256(recording_id.encode("utf-8")).digest(), "big")


def bucket_of(recording_id: str, buckets: int) -> int:
    """Stable group of a recording among ``buckets`` (sha256 of its id, not Python's salted hash)."""
    return (_id_hash(recording_id) >> 192) % max(1, buckets)


def shard_buckets(sample_bytes: int, max_bytes: int) -> int:
    """Number of shard buckets: the run's sample bytes over the shard size bound, so that a bucket
    holds about one shard's worth of samples whatever the number of recordings."""
    return max(1, math.ceil(sample_bytes / max(1, max_bytes)))


def reject_parts(inputs: int, recordings_per_part: int) -> int:
    """Number of ``rejects/part-*.jsonl`` groups for ``inputs`` listed recordings."""
    return max(1, math.ceil(inputs / max(1, recordings_per_part)))


def record_bytes(record: Mapping[str, Any]) -> int:
    """Payload bytes of an encoded sample (what the shard size bound counts)."""
    return sum(len(value) for name, value in record.items() if name != "__key__")


def write_bucket(output: str, bucket: int, records: Iterable[tuple[str, dict[str, Any]]], max_bytes: int,
                 stride: int) -> list[tuple[str, int]]:
    """Write one bucket's records sorted by key as ``shard-%06d.tar`` from index ``bucket * stride``;
    returns (shard name, bytes) per shard written. Remote shards are written to local scratch and
    uploaded one at a time."""
    ordered = sorted(records, key=lambda item: item[0])
    keys = [key for key, _ in ordered]
    if len(keys) != len(set(keys)):
        raise ValueError(f"duplicate sample keys in bucket {bucket}")
    shards_dir = storage.join(output, SHARDS_DIR)
    local = storage.is_local(output)
    with tempfile.TemporaryDirectory() as scratch:
        written = write_records((record for _, record in ordered), shards_dir if local else scratch, max_bytes,
                                bucket * stride)
        if len(written) > stride:
            raise ValueError(f"bucket {bucket} wrote {len(written)} shards, more than shards.bucket_stride={stride}")
        summary = []
        for shard in written:
            summary.append((shard.name, shard.stat().st_size))
            if not local:
                storage.upload_file(str(shard), storage.join(shards_dir, shard.name))
                shard.unlink()
    return summary


def annotation_files(recording_id: str, rttm: Optional[str], words_json: Optional[str]) -> list[tuple[str, bytes]]:
    """(relative path, payload) of a recording's annotations."""
    files = []
    if rttm is not None:
        files.append((f"{ANNOTATIONS_DIR}/{recording_id}.rttm", rttm.encode("utf-8")))
    if words_json is not None:
        files.append((f"{ANNOTATIONS_DIR}/{recording_id}.words.json", words_json.encode("utf-8")))
    return files


# ------------------------------------------------------------------------------------------ tallies
def recording_tally(recording_id: str, outcome: str, reason: Optional[str], counters: Mapping[str, int],
                    annotated: bool, report: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
    """The fixed-size contribution of one recording (or one listing reject) to stats.json: sums only.

    ``annotated``: its annotations were written; the ids of those recordings enter an
    order-independent digest (sum of their sha256 modulo 2^256), not a list."""
    recordings: dict[str, Any] = {"in": 1}
    if outcome == "kept":
        recordings["kept"] = 1
    else:
        recordings[outcome] = {reason: 1}
    if annotated:
        recordings["annotated"] = 1
        recordings["annotated_ids_sum"] = _id_hash(recording_id)
    tally: dict[str, Any] = {"recordings": recordings, "counters": dict(counters)}
    if report:
        tally["report"] = dict(report)
    return tally


def listing_reject_tally(reject: Mapping[str, Any]) -> dict[str, Any]:
    return recording_tally(str(reject.get("id") or reject.get("path")), "rejected", reject["reason"], {}, False)


def build_stats(total: Mapping[str, Any], outputs: Mapping[str, Any], first_shard: Optional[str], buckets: int) -> dict[str, Any]:
    """stats.json from the summed tallies of every recording (``total``) and of every file written
    (``outputs``); asserts in = kept + filtered + rejected (recordings and segments)."""
    counters = dict(total.get("counters", {}))
    recordings = dict(total.get("recordings", {}))
    segment_filtered = {k[len("segments_filtered_"):]: v for k, v in counters.items() if k.startswith("segments_filtered_")}
    shards = outputs.get("shards", {})
    rejects = outputs.get("rejects", {})
    stats = {
        "recordings": {
            "in": recordings.get("in", 0),
            "kept": recordings.get("kept", 0),
            "filtered": dict(sorted(recordings.get("filtered", {}).items())),
            "rejected": dict(sorted(recordings.get("rejected", {}).items())),
            "annotated": recordings.get("annotated", 0),
            "annotated_ids_sha256_sum": format(recordings.get("annotated_ids_sum", 0) % DIGEST_MODULUS, "064x"),
        },
        "segments": {
            "in": counters.get("segments_in", 0),
            "kept": counters.get("segments_kept", 0),
            "samples": counters.get("samples_kept", 0),  # > kept with streams.main_speaker=each (one sample per main speaker)
            "filtered": dict(sorted(segment_filtered.items())),
            "cuts": {k[len("segment_cut_"):]: v for k, v in sorted(counters.items()) if k.startswith("segment_cut_")},
        },
        "audio_hours": {
            "decoded": round(counters.get("audio_samples_in", 0) / OUTPUT_SAMPLE_RATE / 3600, 6),
            "kept": round(counters.get("samples_kept_24k", 0) / OUTPUT_SAMPLE_RATE / 3600, 6),
        },
        "flags": {"downmixed_multichannel": counters.get("downmixed_multichannel", 0), "upsampled": counters.get("upsampled", 0)},
        "shards": {"count": shards.get("count", 0), "bytes": shards.get("bytes", 0), "first": first_shard,
                   "buckets": buckets},
        "rejects": {"parts": rejects.get("parts", 0), "lines": rejects.get("lines", 0)},
        "report": total.get("report", {}),
    }
    rec = stats["recordings"]
    assert rec["in"] == rec["kept"] + sum(rec["filtered"].values()) + sum(rec["rejected"].values()), rec
    seg = stats["segments"]
    assert seg["in"] == seg["kept"] + sum(seg["filtered"].values()), seg
    return stats


def rejects_part_name(part: int) -> str:
    return REJECTS_PATTERN % part


def rejects_jsonl(lines: Iterable[Mapping[str, Any]]) -> bytes:
    """Reject lines sorted by (id, segment, stage, reason, path), one JSON object per line."""
    ordered = sorted(lines, key=lambda r: (str(r.get("id")), r.get("segment", -1), r["stage"], r["reason"], str(r.get("path"))))
    return "".join(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n" for line in ordered).encode("utf-8")
