"""Scale benchmark of the text job (``make bench-scale``): does per-worker memory stay flat as the input grows?

For each input size (default 50k, 200k, 800k documents; one shard group) it builds deterministic
CC-style WET files from the real CC documents in ../shared/data as ``make bench`` does (recombined
sentences, per-site navigation/footer boilerplate) plus near-duplicate copies (a page of another site
with one line changed), runs the job with every configured stage and one worker per core, and prints:
docs/s per core, the peak RSS (kernel high-water mark, VmHWM) of every process of the run (the
launcher, which on the DirectRunner also holds the shuffle, and each SDK worker), the largest
per-key state of the dedup join (``line_dedup.max_partition_bytes``) and of the component rounds
(the largest salted neighbourhood), the rounds, and the shuffle bytes (counted at the join keys).
With ``--baseline-repo DIR`` the 50k input is also run by another checkout (e.g. the commit before
the shuffle join) side by side, for the throughput ratio. Figures only, nothing asserted.

Stage inputs reach the SDK workers in bounded messages (``bench/bounded_messages.py``, installed in
the launcher only): Beam's FnApiRunner sends a worker its whole share of a stage input as one gRPC
message, which makes worker memory grow with the input whatever the job does; Dataflow streams
bundles. ``--beam-messages`` runs the FnApiRunner as it is.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.text_bench import load_sources, wet_record
from moshi_data.pipeline.config import REPO_ROOT

# The job in a fresh interpreter; argv[5]: this checkout's bench/bounded_messages.py, or "" (Beam as is).
RUN_JOB = ("import json,runpy,sys; sys.argv[5] and runpy.run_path(sys.argv[5])['install'](); "
           "from moshi_data.beam_jobs import text_corpus as t; "
           "r=t.run(sys.argv[1], sys.argv[2], overrides=json.loads(sys.argv[3]), beam_args=json.loads(sys.argv[4])); "
           "print('RESULT'+json.dumps(r, default=str))")
BOUNDED_MESSAGES = Path(__file__).with_name("bounded_messages.py")


def build_input(folder: Path, n_docs: int, docs_per_file: int, near_dup_rate: float, seed: int = 0) -> list[str]:
    """Deterministic WET files (cached by parameters): real sentences recombined, site boilerplate,
    and ``near_dup_rate`` of the pages a near copy of an earlier page (one line changed)."""
    folder.mkdir(parents=True, exist_ok=True)
    n_files = max(1, -(-n_docs // docs_per_file))
    paths = [folder / f"scale-{i:04d}.warc.wet.gz" for i in range(n_files)]
    manifest = folder / "manifest.json"
    params = [n_docs, docs_per_file, near_dup_rate, seed]
    if manifest.exists() and json.loads(manifest.read_text())["params"] == params:
        return [str(p) for p in paths]
    documents, short_lines = load_sources()
    rng = random.Random(seed)
    n_sites = max(n_docs // 40, 1)
    recent: list[list[str]] = []
    for file_index, path in enumerate(paths):
        with open(path, "wb") as handle:
            handle.write(gzip.compress(wet_record("", b"isPartOf: CC-BENCH-2024-00\r\n", "warcinfo"), mtime=0))
            for i in range(file_index * docs_per_file, min(n_docs, (file_index + 1) * docs_per_file)):
                site = rng.randrange(n_sites)
                site_rng = random.Random(seed * 1_000_003 + site)
                header = site_rng.sample(short_lines, site_rng.randint(4, 12))
                footer = site_rng.sample(short_lines, site_rng.randint(2, 6))
                if recent and rng.random() < near_dup_rate:
                    body = list(rng.choice(recent))
                    body[rng.randrange(len(body))] = " ".join(rng.sample(documents[rng.randrange(len(documents))], 1))
                else:
                    sentences = documents[rng.randrange(len(documents))]
                    body = [" ".join(rng.sample(sentences, min(len(sentences), rng.randint(1, 3))))
                            for _ in range(rng.randint(4, 25))]
                    recent = (recent + [body])[-1000:]
                text = "\n".join(header + [""] + body + [""] + footer).encode("utf-8")
                handle.write(gzip.compress(wet_record(f"https://site{site}.example/page{i}", text), mtime=0))
    manifest.write_text(json.dumps({"params": params}))
    return [str(p) for p in paths]


def document_counts(text: str) -> list[int]:
    """``--sizes``: comma-separated positive document counts."""
    try:
        sizes = [int(size) for size in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of integers: {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"document counts must be positive: {text!r}")
    return sizes


def _descendants(pid: int) -> list[int]:
    children, stack = [], [pid]
    while stack:
        parent = stack.pop()
        kids = []
        for task in Path(f"/proc/{parent}/task").glob("*"):  # children of every thread, not only the main one
            try:
                kids += [int(k) for k in (task / "children").read_text().split()]
            except OSError:
                pass
        children += kids
        stack += kids
    return children


def _peak_and_name(pid: int) -> tuple[float, str] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    hwm = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    if hwm < 20 * 1024:  # the shell wrappers that start the SDK workers
        return None
    return hwm / 1024, ("sdk worker" if "sdk_worker" in cmdline or "worker_pool" in cmdline else "launcher")


def run_measured(repo: Path, paths: list[str], output: Path, overrides: list[str], beam_args: list[str],
                 bounded_messages: bool = True) -> dict:
    """Run the job in a fresh interpreter of ``repo``; poll the peak RSS (VmHWM) of every process of it.
    ``bounded_messages``: stage inputs reach the workers in bounded messages (bench/bounded_messages.py)."""
    env = {**os.environ, "PYTHONPATH": str(repo)}
    process = subprocess.Popen([sys.executable, "-c", RUN_JOB, ",".join(paths), str(output), json.dumps(overrides),
                                json.dumps(beam_args), str(BOUNDED_MESSAGES) if bounded_messages else ""],
                               cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[int, tuple[float, str]] = {}
    stop = threading.Event()

    def poll():
        while not stop.is_set():
            for pid in [process.pid, *_descendants(process.pid)]:
                measured = _peak_and_name(pid)
                if measured:
                    peaks[pid] = max(peaks.get(pid, measured), measured)
            time.sleep(0.2)

    poller = threading.Thread(target=poll, daemon=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    poller.start()
    stdout, stderr = process.communicate()
    stop.set()
    poller.join()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the job and its SDK workers, once reaped
    if process.returncode != 0:
        raise RuntimeError(stderr[-3000:])
    result = json.loads(next(l for l in stdout.splitlines() if l.startswith("RESULT"))[len("RESULT"):])
    result["process_wall_s"] = round(wall, 2)
    result["cpu_s"] = round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 2)
    result["peaks"] = sorted(((name, round(mb, 1)) for mb, name in peaks.values()), key=lambda item: (item[0], -item[1]))
    return result


def summarize(label: str, n_docs: int, result: dict, cores: int) -> dict:
    stats = result["stats"]
    workers = [mb for name, mb in result["peaks"] if name == "sdk worker"]
    launcher = max([mb for name, mb in result["peaks"] if name == "launcher"], default=0.0)
    dedup, minhash = stats["line_dedup"], stats.get("minhash", {})
    counters = result.get("counters", {})
    row = {
        "input": label, "docs": n_docs, "wall_s": result["wall_s"], "process_wall_s": result["process_wall_s"],
        "docs_per_s_per_core": round(n_docs / result["wall_s"] / cores, 1),
        "cpu_s": result["cpu_s"], "docs_per_cpu_s": round(n_docs / result["cpu_s"], 1) if result["cpu_s"] else None,
        "heap_trim_s": result.get("seconds", {}).get("heap_trim"),  # what handing free heap pages back cost (all workers)
        "worker_peak_rss_mb": workers, "max_worker_peak_rss_mb": max(workers, default=None),
        "launcher_peak_rss_mb": launcher,
        "dedup_max_partition_bytes": dedup.get("max_partition_bytes"), "dedup_table_bytes": dedup.get("table_bytes"),
        "dedup_partitions": dedup.get("partitions"),
        "minhash_rounds": minhash.get("rounds"), "minhash_converged": minhash.get("converged"),
        "minhash_largest_component": minhash.get("largest_component"),
        "minhash_max_key_neighbours": result.get("key_sizes", {}).get("star_key_neighbours"),
        "shuffle_bytes": {key: value for key, value in counters.items() if key.startswith("shuffle_bytes")},
        "text_bytes_in": stats["funnel"]["in"]["bytes"],
        "kept": stats["documents"]["kept"], "filtered": stats["documents"]["filtered"],
    }
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-worker memory and throughput of the text job as the input grows.")
    parser.add_argument("--sizes", type=document_counts, default=document_counts("50000,200000,800000"),
                        help="documents per input, comma separated")
    parser.add_argument("--docs-per-file", type=int, default=10_000)
    parser.add_argument("--near-dup-rate", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="SDK workers (default: one per core)")
    parser.add_argument("--output", default="out/bench/scale")
    parser.add_argument("--baseline-repo", help="another checkout to run on the first input, side by side")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run")
    parser.add_argument("--beam-messages", action="store_true",
                        help="leave the FnApiRunner as it is: a worker gets its whole share of a stage input as one "
                             "message (worker memory then grows with the input; see bench/bounded_messages.py)")
    args = parser.parse_args(argv)
    output = (REPO_ROOT / args.output).resolve()
    beam_args = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={args.workers}"]
    overrides = ["input.files_per_group=100000", *args.set]  # one shard group whatever the size
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()}; {args.workers} workers; stage inputs "
          + ("as the FnApiRunner sends them (one message per worker)" if args.beam_messages else
             "in bounded messages (bench/bounded_messages.py)"), flush=True)
    rows = []
    for index, n_docs in enumerate(args.sizes):
        paths = build_input(output / f"input-{n_docs}", n_docs, args.docs_per_file, args.near_dup_rate)
        runs = [("this checkout", REPO_ROOT)]
        if args.baseline_repo and index == 0:
            runs.append(("baseline", Path(args.baseline_repo).resolve()))
        for label, repo in runs:
            result = run_measured(repo, paths, output / f"job-{n_docs}-{label.replace(' ', '_')}", overrides, beam_args,
                                  bounded_messages=not args.beam_messages)
            rows.append(summarize(f"{n_docs} ({label})", n_docs, result, args.workers))
            print(f"  load average after: {os.getloadavg()}", flush=True)
    ours = [row for row in rows if "this checkout" in row["input"]]
    if len(ours) > 1 and ours[0]["max_worker_peak_rss_mb"]:
        print(f"max worker peak RSS {ours[-1]['docs']} vs {ours[0]['docs']} docs: "
              f"{ours[-1]['max_worker_peak_rss_mb'] / ours[0]['max_worker_peak_rss_mb']:.2f}x (target 0.8-1.2x)")
    base = [row for row in rows if "baseline" in row["input"]]
    if base:
        print(f"{ours[0]['docs']} docs throughput vs baseline: {ours[0]['docs_per_s_per_core'] / base[0]['docs_per_s_per_core']:.2f}x "
              f"job wall, {base[0]['process_wall_s'] / ours[0]['process_wall_s']:.2f}x process wall (the launcher's report "
              f"included: older checkouts draw it inside the job), {ours[0]['docs_per_cpu_s'] / base[0]['docs_per_cpu_s']:.2f}x "
              "per CPU second (target >= 0.9x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
