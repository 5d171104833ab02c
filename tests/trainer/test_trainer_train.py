"""End-to-end tiny training on shards built from ../shared/data/diarization (see conftest.py)."""
from __future__ import annotations

import json

import pytest

from moshi_data.trainer.train import main as train_main
from moshi_data.trainer.train import read_jsonl

STEPS = 50  # the tiny_run fixture's step count


def read_log(run):
    return read_jsonl(run / "log.jsonl")


def test_trainer_tiny_loss_goes_down(tiny_run):
    log = read_log(tiny_run)
    assert [line["step"] for line in log] == list(range(1, STEPS + 1))
    first = sum(line["loss"] for line in log[:5]) / 5
    last = sum(line["loss"] for line in log[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    for group in ("loss_text", "loss_semantic", "loss_acoustic"):
        assert log[-1][group] < log[0][group], group
    for line in log:
        assert line["tokens_per_s"] > 0 and line["step_time_s"] > 0
    evals = read_jsonl(tiny_run / "eval.jsonl")
    assert [e["step"] for e in evals] == [25, 50] and all(e["eval_batches"] == 1 for e in evals)
    report = json.loads((tiny_run / "report.json").read_text())
    assert report["finished"] and report["train_shards"] == 2 and report["eval_shards"] == 1
    assert report["rejected_total"] == 0
    assert sorted(p.name for p in (tiny_run / "checkpoints").glob("*.pt")) == ["step_00000025.pt", "step_00000050.pt"]


def test_trainer_resume_matches_uninterrupted(tiny_run, trainer_shards, copy_run):
    """A run killed after its step-25 checkpoint (later files left behind) resumes to the same losses."""
    run = copy_run(tiny_run)
    (run / "checkpoints" / "step_00000050.pt").unlink()
    (run / "report.json").unlink()
    # resumed in one worker: the item order does not depend on the worker count
    train_main(["--shards", str(trainer_shards), "--output", str(run), "--steps", str(STEPS), "--preset", "tiny",
                "--set", "data.num_workers=0"])
    resumed, reference = read_log(run), read_log(tiny_run)
    assert [line["step"] for line in resumed] == list(range(1, STEPS + 1))  # lines after 25 were rewritten
    for mine, theirs in zip(resumed[25:], reference[25:]):
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5, abs=1e-6), mine["step"]
        assert mine["data_position"] == theirs["data_position"]
    assert json.loads((run / "report.json").read_text())["resumed_from"] == 25


def test_trainer_stop_and_rerun_done_is_noop(tiny_run, trainer_shards, copy_run):
    run = copy_run(tiny_run)
    before = (run / "log.jsonl").read_text()
    train_main(["--shards", str(trainer_shards), "--output", str(run), "--steps", str(STEPS), "--preset", "tiny"])
    assert (run / "log.jsonl").read_text() == before
    with pytest.raises(SystemExit, match="different config"):
        train_main(["--shards", str(trainer_shards), "--output", str(run), "--preset", "tiny",
                    "--set", "model.dim=32"])
