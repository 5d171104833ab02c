"""The moshi-data commands as a user runs them: make quoting, exit codes, one-line errors, the console
of a default text run, and outputs that pandas, pyarrow.dataset and HF datasets load."""
from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from moshi_data.cli import COMMANDS, main as cli_main
from moshi_data.pipeline.command import table
from moshi_data.pipeline.text.output import RUN_METADATA_KEY, shard_run

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200"}
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
RUN_KEYS = {"config", "version", "inputs", "runner", "started", "wall_s"}
# Console bound of a default text run (17 files, 7 rejects, 2 Beam workers): summary table (~11
# lines), 7 reject lines, the start line and the few lines Beam's workers print before their log
# level applies. It was 65 lines (47 of them Beam harness lines, each reject twice) before.
CONSOLE_MAX_LINES = 30


def moshi_data(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "moshi_data", *args], cwd=REPO_ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)


def one_line_error(result: subprocess.CompletedProcess, command: str) -> str:
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith(f"moshi-data {command}: error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


def english_jsonl(shared_data: Path, folder: Path, files: int, per_file: int) -> list[Path]:
    source = shared_data / "wet" / "cc_text_jsonl" / "dolma_cc_en_head-0091.jsonl.gz"
    lines = gzip.decompress(source.read_bytes()).decode().splitlines()[: files * per_file]
    paths = []
    for index in range(files):
        path = folder / f"part {index}.jsonl"  # a space in the name: quoting must keep it
        path.write_text("\n".join(lines[index * per_file:(index + 1) * per_file]) + "\n")
        paths.append(path)
    return paths


# ------------------------------------------------------------------------------------ make
def test_make_passes_a_glob_with_two_files_intact(shared_data, tmp_path):
    english_jsonl(shared_data, tmp_path, files=2, per_file=3)
    output = tmp_path / "out, with comma"
    args = " ".join([*IN_PROCESS, "--set", "stages=[min_length]", "--set", "cross_document_stages=[]"])
    result = subprocess.run(["make", "-C", str(REPO_ROOT), "text-corpus", f"INPUT={tmp_path}/*.jsonl",
                             f"OUTPUT={output}", "INSTALL=/dev/null", f"ARGS={args}"],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    stats = json.loads((output / "stats.json").read_text())
    assert stats["files"]["in"] == 2 and stats["run"]["inputs"]["count"] == 2
    assert stats["documents"]["in"] == 6


def test_make_quotes_every_value():
    value = "a b/*.jsonl,c's"
    result = subprocess.run(["make", "-n", "--no-print-directory", "-C", str(REPO_ROOT), "text-corpus",
                             f"INPUT={value}", "OUTPUT=o p"], capture_output=True, text=True, timeout=60)
    import shlex

    [command] = [line for line in result.stdout.replace("\\\n", " ").splitlines() if "-m moshi_data" in line]
    words = shlex.split(command)
    assert words[words.index("--input") + 1] == value and words[words.index("--output") + 1] == "o p"
    assert words[1:4] == ["-m", "moshi_data", "text-corpus"]


# ------------------------------------------------------------------------------------ help, errors, exit codes
def test_every_command_has_help_with_its_real_name_and_the_common_options(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli_main([name, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: moshi-data {name} "), out[:200]
        for option in ("--verbose", "--quiet", "--debug", "--version"):
            assert option in out, (name, option)
        if name not in ("text-report", "inspect", "show-sample"):  # the commands that read no config
            assert "--config" in out and "--set" in out and "--print-config" in out, name


def test_version_and_print_config(tmp_path):
    version = moshi_data("text-corpus", "--version")
    assert version.returncode == 0 and re.match(r"moshi-data \d+\.\d+", version.stdout)
    partial = tmp_path / "mine.yaml"
    partial.write_text("language:\n  threshold: 0.5\n")
    printed = moshi_data("text-corpus", "--config", str(partial), "--set", "min_length.min_chars=7", "--print-config")
    assert printed.returncode == 0, printed.stderr
    import yaml

    config = yaml.safe_load(printed.stdout)
    assert config["language"]["threshold"] == 0.5 and config["min_length"]["min_chars"] == 7 and "runner" in config


@pytest.mark.parametrize("args, message", [
    (["--set", "language.treshold=0.1"], "did you mean 'language.threshold'"),
    (["--set", "language.threshold=high"], "expected a number"),
    (["--limt", "1"], "unknown option --limt"),
    (["--input", "/no/such/file.jsonl"], "input not found: /no/such/file.jsonl"),
    (["--input", "{tmp}/*.jsonl"], "input glob matched no file"),
    (["--input", "{tmp}"], "is a folder"),
    (["--config", "{tmp}/bad.yaml"], "malformed YAML"),
])
def test_user_errors_are_one_line_and_exit_2(args, message, tmp_path):
    (tmp_path / "bad.yaml").write_text("language: [\n")
    result = moshi_data("text-corpus", "--output", str(tmp_path / "out"), *[a.format(tmp=tmp_path) for a in args])
    assert result.returncode == 2, result.stderr
    assert message in one_line_error(result, "text-corpus")
    assert not (tmp_path / "out" / "stats.json").exists()


def test_traceback_only_with_debug(tmp_path):
    result = moshi_data("text-corpus", "--output", str(tmp_path), "--input", "/no/such/file.jsonl", "--debug")
    assert result.returncode == 2 and "Traceback" in result.stderr


def test_nothing_read_exits_1_with_the_rejects(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = moshi_data("text-corpus", "--input", str(empty), "--output", str(tmp_path / "out"), *IN_PROCESS)
    assert result.returncode == 1
    assert "no document could be read from 1 input file(s): empty_file 1" in one_line_error(result, "text-corpus")
    [rejects] = list((tmp_path / "out" / "rejects").glob("*.jsonl"))
    assert json.loads(rejects.read_text())["reason"] == "empty_file"


def test_audio_empty_folder_fails_before_loading_models(tmp_path):
    (tmp_path / "notes.txt").write_text("no audio here\n")
    result = moshi_data("audio-shards", "--input", str(tmp_path), "--output", str(tmp_path / "out"), timeout=120)
    assert result.returncode == 2 and "no recording in" in one_line_error(result, "audio-shards")
    missing = moshi_data("audio-shards", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "out"), timeout=120)
    assert missing.returncode == 2 and "input not found" in one_line_error(missing, "audio-shards")


def test_unknown_command_suggests_the_closest():
    result = moshi_data("text-corpsu")
    assert result.returncode == 2 and "did you mean 'text-corpus'" in result.stderr


def test_summary_table_is_aligned():
    text = table([("documents in", 758, ""), ("  kept", 52, "x 1")])
    first, second = text.splitlines()
    assert first.index("758") + 3 == second.index("52") + 2  # numbers right-aligned


# ------------------------------------------------------------------------------------ a default run
@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """``moshi-data text-corpus --output OUT``: default input (../shared WET + JSONL), default runner."""
    output = tmp_path_factory.mktemp("default") / "out"
    result = moshi_data("text-corpus", "--output", str(output), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return output, result


def test_console_of_a_default_run(default_run):
    output, result = default_run
    lines = (result.stdout + result.stderr).splitlines()
    assert len(lines) <= CONSOLE_MAX_LINES, "\n".join(lines)
    assert max(len(line) for line in lines) < 300
    assert "Traceback" not in result.stderr and "Pipeline_options" not in result.stderr
    assert re.search(r"^text corpus: \d+ input files", result.stderr, re.M)  # the project's INFO lines show
    rejects = [line for line in lines if line.startswith("warning: rejected ")]
    assert rejects and len(rejects) == len(set(rejects))  # each reject once
    stats = json.loads((output / "stats.json").read_text())
    assert f"{sum(stats['documents']['rejected'].values())} rejected in all" in result.stderr
    assert re.search(rf"^\s+documents in\s+{stats['documents']['in']}$", result.stdout, re.M)


def test_outputs_load_in_every_reader(default_run):
    output, _ = default_run
    stats = json.loads((output / "stats.json").read_text())
    kept = stats["documents"]["kept"]
    shards = sorted((output / "documents").glob("*.parquet"))
    assert shards and all(pq.ParquetFile(s).metadata.num_rows > 0 for s in shards)  # no zero-row shard
    assert stats["output"]["shards"] == len(shards)

    import pandas as pd
    import pyarrow.dataset as ds
    import datasets

    assert len(pd.read_parquet(output / "documents")) == kept
    assert ds.dataset(output / "documents", format="parquet").count_rows() == kept
    loaded = datasets.load_dataset("parquet", data_dir=str(output / "documents"), split="train",
                                   cache_dir=str(output.parent / "hf-cache"))
    assert loaded.num_rows == kept and "text" in loaded.column_names


def test_provenance_and_conventions(default_run):
    output, _ = default_run
    stats = json.loads((output / "stats.json").read_text())
    run = stats["run"]
    assert set(run) == RUN_KEYS
    assert run["inputs"]["count"] == stats["files"]["in"] and len(run["inputs"]["sha256"]) == 64
    assert run["runner"] == "DirectRunner" and run["wall_s"] > 0 and run["started"].endswith("+00:00")
    assert run["config"]["language"]["threshold"] == 0.85 and run["config"]["quality"]["model"]
    shard = next((output / "documents").glob("*.parquet"))
    metadata = json.loads(pq.read_schema(shard).metadata[RUN_METADATA_KEY])
    assert metadata == shard_run(run) and "runner" not in metadata and "runner" not in metadata["config"] and not {"partitions", "bytes_per_partition"} & set(metadata["config"]["line_dedup"])
    assert metadata["config"]["language"] == run["config"]["language"] and metadata["inputs"] == run["inputs"]

    rows = pq.read_table(output / "documents").to_pylist()
    assert all(re.fullmatch(r"\d+:\d+", r["doc_id"]) for r in rows)
    assert all(os.path.isabs(r["source"]) and "/../" not in r["source"] for r in rows)
    for column in ("url", "record_id", "date", "crawl", "content_language"):
        assert all(r[column] is None or r[column] != "" for r in rows), column
    examples = [json.loads(line) for line in (output / "examples" / "dropped.jsonl").read_text().splitlines()]
    assert examples and all(re.fullmatch(r"\d+:\d+", e["doc_id"]) and "doc_key" not in e for e in examples)


# ------------------------------------------------------------------------------------ progress
def test_progress_bar_counts_files_then_documents(tmp_path):
    from moshi_data.beam_jobs.progress import mark, progress_bar

    stream = io.StringIO()
    with progress_bar("DirectRunner", 2, "files", then=("documents", "documents_read"), interval_s=0.01,
                      stream=stream, enabled=True) as channel:
        assert channel
        for _ in range(2):
            mark(None, channel, files=1, documents_read=5)
        import time

        time.sleep(0.1)
        mark(None, channel, documents=10)
    text = stream.getvalue()
    assert "2/2" in text and "10/10" in text and "documents" in text
    assert not os.path.exists(channel)
    with progress_bar("DataflowRunner", 2, "files", enabled=True) as none:
        assert none is None
