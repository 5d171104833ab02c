"""End-to-end tiny training on shards built from ../shared/data/diarization (see conftest.py)."""
from __future__ import annotations

import json

import pytest

from moshi_data.trainer.train import main as train_main
from moshi_data.trainer.train import read_jsonl, resolve_config

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


def test_trainer_single_stream_trains(trainer_shards, tmp_path):
    """streams=single (Moshi's pre-training): the mix's codes (Mimi on the fly) + every speaker's text."""
    output = tmp_path / "single"
    train_main(["--shards", str(trainer_shards), "--output", str(output), "--steps", "30", "--preset", "tiny",
                "--set", "model.streams=single", "--set", "train.eval_every=0"])
    log = read_log(output)
    assert len(log) == 30 and {line["batch"] for line in log} == {"audio"}
    assert sum(line["loss"] for line in log[-5:]) < 0.7 * sum(line["loss"] for line in log[:5])
    assert "loss_other_semantic" not in log[-1]
    report = json.loads((output / "report.json").read_text())
    assert report["streams"] == "single" and report["rejected_total"] == 0


def test_trainer_single_stream_needs_text_all(trainer_shards, tmp_path):
    """Shards without text_all.npy: each record is a named reject, then a clear error."""
    from moshi_data.trainer.data import ShardStream

    config = resolve_config("trainer", "tiny", ["model.streams=single"])
    stripped = tmp_path / "shard-000000.tar"
    import webdataset as wds
    from webdataset.tariterators import tarfile_samples

    with open(stripped, "wb") as handle:
        writer = wds.TarWriter(handle, mtime=0.0)
        for record in tarfile_samples([{"url": str(trainer_shards / "shard-000000.tar")}]):
            writer.write({k: v for k, v in record.items() if k not in ("__url__", "text_all.npy")})
        writer.close()
    item = next(iter(ShardStream([str(stripped)], config, train=False)))
    assert item["tokens"] is None and "no text_all.npy" in item["reason"]
    with pytest.raises(ValueError, match="set data.decode_audio=true"):
        ShardStream([str(stripped)], resolve_config("trainer", "tiny", ["model.streams=single", "data.decode_audio=false"]))
