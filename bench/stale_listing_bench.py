"""Memory of the stale-file listing as an output folder grows (`make bench-stale-listing`).

For folders of N empty files (names like the audio job's ``annotations/<id>.rttm`` and
``<id>.words.json``), prints the peak Python memory (tracemalloc) of what one listing worker holds:
the whole listing ``storage.list_folder`` returns (what the jobs' ``ListFolder`` held before), and
one name range of ``beam_jobs.stale_files`` (the largest of ``--ranges`` ranges cut at the names'
quantiles) consumed from the stream ``storage.iter_names`` yields. Each N in its own folder under a
temporary directory; local disk only (the S3 path is tested in tests/audio/test_audio_stale_files.py).

    .venv/bin/python -m bench.stale_listing_bench [--files 10000 40000 160000] [--ranges 16]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from pathlib import Path

from moshi_data.beam_jobs.stale_files import name_ranges
from moshi_data.pipeline import storage
from moshi_data.pipeline.config import load_config


def _peak(consume) -> tuple[int, float]:
    tracemalloc.start()
    start = time.perf_counter()
    consume()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak, time.perf_counter() - start


def measure(count: int, ranges: int, root: Path) -> dict:
    folder = root / f"annotations-{count}"
    folder.mkdir()
    names = sorted(f"rec-{i:09d}.{ext}" for i in range(count // 2) for ext in ("rttm", "words.json"))
    for name in names:
        (folder / name).touch()
    cuts = {"annotations": [names[round(q * (len(names) - 1) / ranges)] for q in range(ranges + 1)]}
    spans = name_ranges("annotations", cuts)
    del names
    whole_peak, whole_s = _peak(lambda: storage.list_folder(str(folder)))
    largest = max(spans, key=lambda span: sum(1 for _ in storage.iter_names(str(folder), span[1], span[2])))
    counted = []
    range_peak, range_s = _peak(lambda: counted.append(sum(1 for _ in storage.iter_names(str(folder), largest[1], largest[2]))))
    return {"files": count, "ranges": len(spans), "largest_range_files": counted[0],
            "whole_listing_peak_kib": round(whole_peak / 1024, 1), "whole_listing_s": round(whole_s, 3),
            "one_range_peak_kib": round(range_peak / 1024, 1), "one_range_s": round(range_s, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, nargs="+", default=[10_000, 40_000, 160_000])
    parser.add_argument("--ranges", type=int, default=load_config("audio_shards")["stale_files"]["listing_ranges"],
                        help="name ranges per folder (default: the audio job's stale_files.listing_ranges)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="stale-listing-") as root:
        rows = [measure(count, args.ranges, Path(root)) for count in args.files]
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
