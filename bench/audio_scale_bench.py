"""Memory of the audio shards job as the number of recordings grows (`make bench-audio-scale`).

Runs the Beam job (DirectRunner, ``multi_processing``, 2 worker processes) over N copies of one short
espeak-ng clip, each N in a fresh process, and prints the peak RSS of the largest SDK worker process
(the processes that ran the stages and wrote shards, rejects and stats: their ``VmHWM`` high-water
mark, sampled from /proc every 0.2 s while they live) and of the launcher process (which, for the
DirectRunner, also holds the runner's in-memory shuffle). With ``shards.max_bytes`` small, the shard
bucket count grows with N, so a flat worker peak shows that no worker state grows with the number of
recordings. The tokenizer is trained (when missing) before the measurements.

    .venv/bin/python -m bench.audio_scale_bench [--copies 8 32 64] [--output out/bench-audio-scale]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from moshi_data.pipeline.config import REPO_ROOT  # noqa: E402

WORKERS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]
OVERRIDES = ["shards.max_bytes=500000", "cpu_threads=1", "report.samples=0"]
SENTENCE = "hello there my friend. the weather is lovely today, thank you. see you tomorrow."


def _children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    return children


class WorkerPeaks(threading.Thread):
    """Samples the VmHWM (peak RSS, kB) of this process's descendants that run Beam's SDK worker."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[int, int] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            tree, pending = _children(), [os.getpid()]
            while pending:
                for pid in tree.get(pending.pop(), []):
                    pending.append(pid)
                    try:
                        if b"sdk_worker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                            continue
                        status = Path(f"/proc/{pid}/status").read_text()
                    except OSError:
                        continue
                    for line in status.splitlines():
                        if line.startswith("VmHWM:"):
                            self.peaks[pid] = max(self.peaks.get(pid, 0), int(line.split()[1]))


def measure(copies: int, folder: Path) -> dict:
    """One job over ``copies`` copies of the clip, in this process: counts and peak RSS (MB)."""
    from moshi_data.beam_jobs import audio_shards
    from moshi_data.pipeline.config import load_config

    inputs = folder / "inputs"
    inputs.mkdir(parents=True)
    clip = folder / "clip.wav"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(clip), SENTENCE], check=True, capture_output=True)
    for index in range(copies):
        (inputs / f"talk{index:04d}.wav").write_bytes(clip.read_bytes())
    config = load_config("audio_shards", OVERRIDES)
    sampler = WorkerPeaks()
    sampler.start()
    start = time.perf_counter()
    stats = audio_shards.run(str(inputs), str(folder / "out"), config, WORKERS)
    wall = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    return {"copies": copies, "wall_s": round(wall, 1),
            "recordings_kept": stats["recordings"]["kept"], "samples": stats["segments"]["samples"],
            "shards": stats["shards"]["count"], "buckets": stats["shards"]["buckets"],
            "reject_parts": stats["rejects"]["parts"], "workers_seen": len(sampler.peaks),
            "worker_peak_rss_mb": round(max(sampler.peaks.values(), default=0) / 1024, 1),
            "launcher_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, nargs="+", default=[8, 32, 64])
    parser.add_argument("--output", default=str(REPO_ROOT / "out" / "bench-audio-scale"))
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)  # one measurement, in a fresh process
    args = parser.parse_args(argv)
    if args.child is not None:
        with tempfile.TemporaryDirectory(prefix="audio-scale-") as folder:
            print(json.dumps(measure(args.child, Path(folder))))
        return 0
    from moshi_data.beam_jobs.audio_shards import ensure_tokenizer
    from moshi_data.pipeline.config import load_config

    ensure_tokenizer(load_config("audio_shards", OVERRIDES))  # not inside a measurement
    rows = []
    for copies in args.copies:
        child = subprocess.run([sys.executable, "-m", "bench.audio_scale_bench", "--child", str(copies)],
                               capture_output=True, text=True, check=True, cwd=REPO_ROOT)
        rows.append(json.loads(child.stdout.strip().splitlines()[-1]))
        print(json.dumps(rows[-1]), flush=True)
    load = os.getloadavg()
    report = {"rows": rows, "load_average": [round(x, 2) for x in load], "cpus": os.cpu_count(),
              "worker_rss_ratio_last_to_first": round(rows[-1]["worker_peak_rss_mb"] / rows[0]["worker_peak_rss_mb"], 3)}
    Path(args.output).mkdir(parents=True, exist_ok=True)
    (Path(args.output) / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"worker peak RSS x{report['worker_rss_ratio_last_to_first']} from {rows[0]['copies']} to "
          f"{rows[-1]['copies']} recordings (load average {load[0]:.1f} on {os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
