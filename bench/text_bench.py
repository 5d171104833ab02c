"""Benchmark of the text corpus job (``make bench``); prints figures, asserts nothing.

1. Builds >= 50k documents deterministically from the real CC documents in ../shared/data
   (sentences of real pages recombined into new lines, plus per-site navigation/footer
   boilerplate repeated on every page of a site, as in real crawls) into CC-style WET files.
2. Runs the job on one core (in-process) and with one worker per core; prints docs/s per core,
   MB/s, peak RSS, seconds per stage, bytes per unique line hash.
3. Times the raw floor on one core: warcio iteration + normalize/hash every line + one fastText
   LID call per document.
4. Times datatrove (WET read + fastText LID + Parquet write) when a datatrove venv is given
   (``--datatrove-python /tmp/dt-venv/bin/python``; kept apart from this venv).
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import random
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

from moshi_data.pipeline.config import REPO_ROOT

SHARED = REPO_ROOT.parent / "shared" / "data"
CC_JSONL = sorted((SHARED / "wet" / "cc_text_jsonl").glob("*.jsonl.gz"))
# The stages of issue 3 (what the raw floor and datatrove compare against).
ISSUE3_STAGES = ["stages=[language,min_length]", "cross_document_stages=[]"]
SENTENCE_RE = re.compile(r"(?<=[.!?。])\s+")


def load_sources() -> tuple[list[list[str]], list[str]]:
    """Sentences of each real CC document, and the pool of short real lines (menus, footers)."""
    documents, short_lines = [], set()
    for path in CC_JSONL:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for line in handle:
                text = json.loads(line)["text"]
                sentences = [s.strip() for para in text.split("\n") for s in SENTENCE_RE.split(para) if len(s.strip()) > 20]
                if len(sentences) >= 3:
                    documents.append(sentences)
                short_lines.update(l.strip() for l in text.split("\n") if 2 < len(l.strip()) < 40)
    return documents, sorted(short_lines)


def wet_record(url: str, body: bytes, record_type: str = "conversion") -> bytes:
    headers = [("WARC-Type", record_type), ("WARC-Target-URI", url), ("WARC-Date", "2024-05-18T00:00:00Z"),
               ("WARC-Record-ID", f"<urn:uuid:{hashlib.md5(url.encode()).hexdigest()}>"),
               ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    return ("WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode() + body + b"\r\n\r\n"


def build_input(folder: Path, n_docs: int, n_files: int, seed: int = 0) -> tuple[list[str], int]:
    """Write the synthetic-from-real WET files (cached by parameters); returns paths and text bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"bench-{i:03d}.warc.wet.gz" for i in range(n_files)]
    manifest = folder / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text())["params"] == [n_docs, n_files, seed]:
        return [str(p) for p in paths], json.loads(manifest.read_text())["text_bytes"]
    documents, short_lines = load_sources()
    rng = random.Random(seed)
    n_sites = max(n_docs // 40, 1)
    sites = []
    for site in range(n_sites):
        site_rng = random.Random(seed * 1_000_003 + site)
        sites.append((site_rng.sample(short_lines, site_rng.randint(4, 12)), site_rng.sample(short_lines, site_rng.randint(2, 6))))
    per_file = (n_docs + n_files - 1) // n_files
    text_bytes = 0
    for file_index, path in enumerate(tqdm(paths, desc="building bench WET files")):
        with open(path, "wb") as handle:
            handle.write(gzip.compress(wet_record("", b"isPartOf: CC-BENCH-2024-00\r\n", "warcinfo"), mtime=0))
            for i in range(file_index * per_file, min(n_docs, (file_index + 1) * per_file)):
                site = rng.randrange(n_sites)
                header, footer = sites[site]
                sentences = documents[rng.randrange(len(documents))]
                body = [" ".join(rng.sample(sentences, min(len(sentences), rng.randint(1, 3))))
                        for _ in range(rng.randint(4, 25))]
                text = "\n".join(header + body + footer).encode("utf-8")
                text_bytes += len(text)
                handle.write(gzip.compress(wet_record(f"https://site{site}.example/page{i}", text), mtime=0))
    manifest.write_text(json.dumps({"params": [n_docs, n_files, seed], "text_bytes": text_bytes}))
    return [str(p) for p in paths], text_bytes


def raw_floor(paths: list[str], lid_model: str) -> dict:
    """One core: warcio iteration + normalize/hash every line + one LID call per document."""
    from warcio.archiveiterator import ArchiveIterator

    from moshi_data.pipeline.models import resolve_model
    from moshi_data.pipeline.text.langid import load_fasttext
    from moshi_data.pipeline.text.normalize import line_hashes

    model = load_fasttext(str(resolve_model(lid_model)))
    seconds = {"warcio": 0.0, "normalize_hash": 0.0, "lid": 0.0}
    docs = 0
    start_all = time.perf_counter()
    for path in paths:
        with open(path, "rb") as handle:
            iterator = iter(ArchiveIterator(handle))
            while True:
                t0 = time.perf_counter()
                record = next(iterator, None)
                if record is None:
                    break
                body = record.content_stream().read()
                t1 = time.perf_counter()
                seconds["warcio"] += t1 - t0
                if record.rec_type != "conversion":
                    continue
                lines = body.decode("utf-8").split("\n")
                line_hashes(lines)
                t2 = time.perf_counter()
                model.predict(" ".join(lines), k=1)
                seconds["lid"] += time.perf_counter() - t2
                seconds["normalize_hash"] += t2 - t1
                docs += 1
    wall = time.perf_counter() - start_all
    return {"docs": docs, "wall_s": round(wall, 2), "docs_per_s": round(docs / wall, 1),
            "seconds": {k: round(v, 2) for k, v in seconds.items()}}


def peak_rss_mb() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return round(max(own, children) / 1024, 1)


def run_job(paths: list[str], output: Path, config: str, beam_args: list[str], overrides: list[str]) -> dict:
    """Run the job in a fresh interpreter so its peak RSS is measured alone."""
    code = ("import json,sys,resource; from moshi_data.beam_jobs import text_corpus as t; "
            "r=t.run(sys.argv[1], sys.argv[2], sys.argv[3], overrides=json.loads(sys.argv[4]), beam_args=json.loads(sys.argv[5])); "
            "r['peak_rss_mb']=round(max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)/1024,1); "
            "print('RESULT'+json.dumps(r))")
    done = subprocess.run([sys.executable, "-c", code, ",".join(paths), str(output), config, json.dumps(overrides),
                           json.dumps(beam_args)], cwd=REPO_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-3000:])
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


DATATROVE_SCRIPT = r'''
import sys, time, json
from datatrove.pipeline.readers import WarcReader
from datatrove.pipeline.filters import LanguageFilter
from datatrove.pipeline.writers import ParquetWriter
from datatrove.executor import LocalPipelineExecutor
import datatrove.utils.lid as lid
import os
import fasttext
class LocalFT176(lid.FT176LID):
    """datatrove's ft176 LID with the model file given locally (its default is a download)."""
    @property
    def model(self):
        if self._model is None:
            self._model = fasttext.load_model(os.environ["DT_LID_MODEL"])
        return self._model
lid.FT176LID = LocalFT176
import datatrove.pipeline.filters.language_filter as lf
lf.FT176LID = LocalFT176
if __name__ == "__main__":  # datatrove's workers re-import this file
    paths_dir, out, workers = sys.argv[1], sys.argv[2], int(sys.argv[3])
    start = time.perf_counter()
    LocalPipelineExecutor(pipeline=[WarcReader(paths_dir, glob_pattern="*.warc.wet.gz"),
                                    LanguageFilter(languages=["en"], language_threshold=0.85, backend="ft176"),
                                    ParquetWriter(out)],
                          tasks=workers, workers=workers, logging_dir=out + "/_logs").run()
    print("RESULT" + json.dumps({"wall_s": time.perf_counter() - start}))
'''


def run_datatrove(python: str, folder: Path, output: Path, model: str, workers: int) -> dict:
    script = output.parent / "datatrove_bench.py"
    script.write_text(DATATROVE_SCRIPT)
    done = subprocess.run([python, str(script), str(folder), str(output), str(workers)],
                          capture_output=True, text=True, env={**os.environ, "DT_LID_MODEL": model}, timeout=3600)
    if done.returncode != 0:
        return {"error": done.stderr[-1500:]}
    line = next(l for l in done.stdout.splitlines() if l.startswith("RESULT"))
    return json.loads(line[len("RESULT"):])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Benchmark the text corpus job (prints figures).")
    parser.add_argument("--config", default="text_corpus")
    parser.add_argument("--output", default="out/bench/text")
    parser.add_argument("--docs", type=int, default=50_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--all-stages", action=argparse.BooleanOptionalAction, default=True,
                        help="also run the job with every configured stage (classifiers, MinHash)")
    parser.add_argument("--datatrove-python", default="/tmp/dt-venv/bin/python",
                        help="python of a separate venv with datatrove (skipped when missing)")
    args = parser.parse_args(argv)
    from moshi_data.pipeline.config import load_config
    from moshi_data.pipeline.models import resolve_model

    output = (REPO_ROOT / args.output).resolve()
    paths, text_bytes = build_input(output / "input", args.docs, args.files)
    cores = os.cpu_count() or 1
    mb = text_bytes / 1e6
    print(f"input: {len(paths)} WET files, {args.docs} documents, {mb:.1f} MB of text ({output / 'input'})")
    lid_model = load_config(args.config)["language"]["model"]

    floor = raw_floor(paths, lid_model)
    print(f"raw floor (1 core): {floor['docs_per_s']} docs/s, {floor['wall_s']} s, split {floor['seconds']}")

    one_core = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    all_cores = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", f"--direct_num_workers={cores}"]
    runs = {"1 core, issue-3 stages": (one_core, 1, ISSUE3_STAGES),
            f"{cores} workers, issue-3 stages": (all_cores, cores, ISSUE3_STAGES)}
    if args.all_stages:
        runs[f"{cores} workers, all configured stages"] = (all_cores, cores, [])
    results = {}
    for name, (beam_args, workers, overrides) in runs.items():
        result = run_job(paths, output / "job", args.config, beam_args, overrides)
        docs = result["stats"]["documents"]["in"]
        results[name] = result
        dedup = result["stats"]["line_dedup"]
        print(f"job [{name}]: wall {result['wall_s']} s, {docs / result['wall_s']:.0f} docs/s, "
              f"{docs / result['wall_s'] / workers:.0f} docs/s per core, {mb / result['wall_s']:.2f} MB/s, "
              f"peak RSS {result['peak_rss_mb']} MB")
        print(f"  seconds per stage (summed over workers): {result['seconds']}")
        print(f"  kept {result['stats']['documents']['kept']} / {docs} docs; filtered {result['stats']['documents']['filtered']}")
        print(f"  line hashes: {dedup['unique_line_hashes']} unique, {dedup['repeated_line_hashes']} repeated; "
              f"{dedup['bytes_per_unique_line_measured']} bytes per unique line in the count arrays")
    single = results["1 core, issue-3 stages"]
    print(f"job/floor on 1 core: {single['wall_s'] / floor['wall_s']:.2f}x (target <= 1.5x)")

    if Path(args.datatrove_python).exists():
        dt = run_datatrove(args.datatrove_python, output / "input", output / "datatrove", str(resolve_model(lid_model)), cores)
        if "error" in dt:
            print(f"datatrove: failed: {dt['error']}")
        else:
            ours = results[f"{cores} workers, issue-3 stages"]
            print(f"datatrove ({cores} workers, WET read + ft176 LID + Parquet): {dt['wall_s']:.1f} s, "
                  f"{args.docs / dt['wall_s']:.0f} docs/s; ours (exact dedup + LID + min length + Parquet) "
                  f"{args.docs / ours['wall_s']:.0f} docs/s = {dt['wall_s'] / ours['wall_s']:.2f}x datatrove (target >= 2x)")
    else:
        print(f"datatrove: not run ({args.datatrove_python} missing; see README for the separate venv)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
