"""Text-only batches from the text corpus mixed with audio batches (Moshi's recipe), tiny preset on CPU."""
from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from moshi_data.trainer.text_data import TextStream, list_text_files
from moshi_data.trainer.train import main as train_main
from moshi_data.trainer.train import read_jsonl, resolve_config
from trainer_helpers import TINY_STEPS, text_args


def mean(values):
    return sum(values) / len(values)


def test_mixed_run_trains_both_kinds(mixed_run):
    log = read_jsonl(mixed_run / "log.jsonl")
    assert [line["step"] for line in log] == list(range(1, TINY_STEPS + 1))
    kinds = [line["batch"] for line in log]
    assert set(kinds) == {"audio", "text"} and 15 <= kinds.count("text") <= 35  # ratio 0.5, seeded draws
    text = [line for line in log if line["batch"] == "text"]
    audio = [line for line in log if line["batch"] == "audio"]
    assert mean([l["loss_text"] for l in text[-5:]]) < 0.8 * mean([l["loss_text"] for l in text[:5]])
    assert mean([l["loss"] for l in audio[-5:]]) < 0.8 * mean([l["loss"] for l in audio[:5]])
    assert "loss_semantic" in audio[0] and "loss_semantic" not in text[0]
    positions = [tuple(line["text_position"]) for line in log]
    assert positions == sorted(positions) and positions[-1] > (0, 0)  # the text stream only moves forward
    # audio position moves on audio steps only, the text position on text steps only
    for before, after in zip(log, log[1:]):
        assert (after["data_position"] > before["data_position"]) == (after["batch"] == "audio")
        assert (after["text_position"] != before["text_position"]) == (after["batch"] == "text")
    evals = read_jsonl(mixed_run / "eval.jsonl")
    assert [e["step"] for e in evals] == [25, 50]
    assert all(e["eval_text_batches"] >= 1 and e["eval_text_loss"] > 0 and "eval_loss" in e for e in evals)
    report = json.loads((mixed_run / "report.json").read_text())
    assert report["text_ratio"] == 0.5 and report["text_documents"]["used"] > 0


def test_mixed_resume_matches_uninterrupted(mixed_run, trainer_shards, text_corpus, spm_tokenizer, copy_run):
    """Killed after the step-25 checkpoint: the resumed run (text read in-process) gives the same losses
    and the same text stream positions as the uninterrupted run."""
    run = copy_run(mixed_run)
    (run / "checkpoints" / "step_00000050.pt").unlink()
    (run / "report.json").unlink()
    train_main(["--shards", str(trainer_shards), "--output", str(run), "--steps", str(TINY_STEPS), "--preset", "tiny",
                *text_args(text_corpus, spm_tokenizer), "--set", "text.num_workers=0", "--set", "data.num_workers=0"])
    resumed, reference = read_jsonl(run / "log.jsonl"), read_jsonl(mixed_run / "log.jsonl")
    assert [line["step"] for line in resumed] == list(range(1, TINY_STEPS + 1))
    for mine, theirs in zip(resumed[25:], reference[25:]):
        assert mine["batch"] == theirs["batch"]
        assert mine["loss"] == pytest.approx(theirs["loss"], rel=1e-5, abs=1e-6), mine["step"]
        assert mine["text_position"] == theirs["text_position"] and mine["data_position"] == theirs["data_position"]
        assert mine["text_documents"] == theirs["text_documents"]
    assert read_jsonl(run / "eval.jsonl") == read_jsonl(mixed_run / "eval.jsonl")


def _assert_resumes(files, config, length, count, cuts):
    stream = iter(TextStream(files, config, length))
    items = [next(stream) for _ in range(count)]
    for cut in cuts:
        again = iter(TextStream(files, config, length, position=tuple(items[cut]["position"])))
        for expected in items[cut + 1 : cut + 4]:
            got = next(again)
            assert (got["tokens"] == expected["tokens"]).all() and got["position"] == expected["position"]
    assert all(item["tokens"].shape == (length,) and item["tokens"].min() >= 0 for item in items)
    return items


def test_text_stream_resumes_at_any_position(text_corpus, spm_tokenizer, tmp_path):
    """Sequences from a saved position equal the uninterrupted stream's (inside documents, at their
    ends, across epochs)."""
    config = resolve_config("trainer", "tiny", ["text.source=x", "text.ratio=0.5", f"text.tokenizer={spm_tokenizer}",
                                                "text.shuffle_buffer=4"])
    _assert_resumes(list_text_files(str(text_corpus), "*.parquet"), config, 50, 120, (0, 7, 60, 115))
    texts = [" ".join(f"word{i}x{j}" for j in range(3 + i)) for i in range(10)]  # short documents
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(10)], "text": texts}), tmp_path / "part-0.parquet")
    pq.write_table(pa.table({"doc_id": [f"e{i}" for i in range(10)], "text": texts[::-1]}), tmp_path / "part-1.parquet")
    items = _assert_resumes(list_text_files(str(tmp_path), "*.parquet"), config, 20, 80, (0, 3, 17, 40, 75))
    epochs = [e for item in items for e in item["events"] if e["reason"] == "used"]
    assert len(epochs) > 40  # several passes over the 19-20 training documents
    assert sum(int((item["tokens"] == 2).sum()) for item in items) > 40  # packed: many EOS per sequence


def _stream_events(files, config, count=5):
    stream = iter(TextStream(files, config, 20))
    items = [next(stream) for _ in range(count)]
    return [event for item in items for event in item["events"]]


def test_text_bad_input(tmp_path, spm_tokenizer):
    """Missing column or unreadable file: a clear error; empty Parquet and non-UTF-8 text: counted skips."""
    config = resolve_config("trainer", "tiny", ["text.source=x", "text.ratio=0.5", f"text.tokenizer={spm_tokenizer}",
                                                "text.shuffle_files=false", "text.shuffle_buffer=0",
                                                "text.eval_fraction=0"])
    good = pa.table({"doc_id": ["a", "b"], "text": ["hello there my friend " * 5, "good morning to you " * 5]})
    pq.write_table(good, tmp_path / "part-0.parquet")
    pq.write_table(good.slice(0, 0), tmp_path / "part-1.parquet")  # no rows
    bad_bytes = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, 3], np.int32).tobytes()),
                                                       pa.py_buffer(b"\xff\xfeA")])
    pq.write_table(pa.table({"doc_id": pa.array(["c"]), "text": bad_bytes}), tmp_path / "part-2.parquet")
    events = _stream_events(list_text_files(str(tmp_path), "*.parquet"), config)
    reasons = [e["reason"] for e in events]
    assert reasons[:4] == ["used", "used", "empty_file", "invalid_utf8"]
    assert events[2]["url"].endswith("part-1.parquet") and events[3]["url"].endswith("part-2.parquet")
    assert events[3]["row"] == 0

    pq.write_table(pa.table({"doc_id": ["a"], "body": ["no text column"]}), tmp_path / "other.parquet")
    with pytest.raises(ValueError, match=r"other.parquet: no column 'text' \(text.column\); columns: doc_id, body"):
        _stream_events([str(tmp_path / "other.parquet")], config)
    (tmp_path / "zero.parquet").write_bytes(b"")
    with pytest.raises(ValueError, match="zero.parquet: not a readable Parquet file"):
        _stream_events([str(tmp_path / "zero.parquet")], config)
    with pytest.raises(RuntimeError, match="no document in 1 text file"):
        _stream_events([str(tmp_path / "part-1.parquet")], config)


def test_text_bad_input_in_a_run(tmp_path, trainer_shards, spm_tokenizer, capsys):
    """Through the trainer: skipped documents land in rejects.jsonl and the counts add up."""
    folder = tmp_path / "corpus" / "documents"
    folder.mkdir(parents=True)
    texts = [f"document number {i} says hello to the world and then some more words" * 3 for i in range(12)]
    pq.write_table(pa.table({"doc_id": [f"d{i}" for i in range(12)], "text": texts}), folder / "part-0.parquet")
    pq.write_table(pa.table({"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   folder / "part-1.parquet")
    output = tmp_path / "run"
    train_main(["--shards", str(trainer_shards), "--output", str(output), "--steps", "6", "--preset", "tiny",
                *text_args(tmp_path / "corpus", spm_tokenizer, ratio=1.0), "--set", "text.num_workers=0",
                "--set", "train.eval_every=0", "--set", "text.eval_fraction=0.2"])
    rejects = read_jsonl(output / "rejects.jsonl")
    assert [(r["kind"], r["reason"]) for r in rejects] == [("text", "empty_file")]
    last = read_jsonl(output / "log.jsonl")[-1]
    assert last["batch"] == "text" and last["rejected"] == 1 and last["text_skipped"]["empty_file"] == 1
    capsys.readouterr()
    assert train_main(["--shards", str(trainer_shards), "--output", str(tmp_path / "run2"), "--preset", "tiny",
                       *text_args(tmp_path / "nowhere", spm_tokenizer)]) == 2  # a missing path: a user error
    assert re.search(r"^moshi-data train: error: no shards matching .*nowhere", capsys.readouterr().err, re.M)
    pq.write_table(pa.table({"doc_id": ["a"], "body": ["no text column"]}), folder / "part-0.parquet")
    assert train_main(["--shards", str(trainer_shards), "--output", str(tmp_path / "run3"), "--preset", "tiny",
                       *text_args(tmp_path / "corpus", spm_tokenizer)]) == 1  # bad input data
    assert re.search(r"^moshi-data train: error: .*text file .*part-0.parquet: no column 'text'",
                     capsys.readouterr().err, re.M)


def test_text_from_s3(text_corpus, spm_tokenizer, fake_aws_env):
    """documents/*.parquet on s3 (byte-range reads) give the same sequences as the local folder."""
    boto3 = pytest.importorskip("boto3")
    from moto import mock_aws

    config = resolve_config("trainer", "tiny", ["text.source=x", "text.ratio=0.5", f"text.tokenizer={spm_tokenizer}"])
    local = list_text_files(str(text_corpus), "*.parquet")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="corpus")
        for path in local:
            client.upload_file(path, "corpus", f"run/documents/{path.rsplit('/', 1)[-1]}")
        remote = list_text_files("s3://corpus/run/documents", "*.parquet")
        assert len(remote) == len(local)
        got = [next(s) for s in [iter(TextStream(remote, config, 50))] for _ in range(20)]
    expected = [next(s) for s in [iter(TextStream(local, config, 50))] for _ in range(20)]
    assert all((a["tokens"] == b["tokens"]).all() for a, b in zip(got, expected))


def test_quality_weighting_prefers_high_scores(tmp_path, spm_tokenizer):
    """text.quality: documents kept with probability clip(sum weight * score, floor, 1)."""
    scores = pa.array([{"wiki": 1.0, "rand": 0.0}] * 50 + [{"wiki": 0.0, "rand": 1.0}] * 50,
                      pa.struct([("wiki", pa.float32()), ("rand", pa.float32())]))
    texts = [f"good page {i} " * 10 for i in range(50)] + [f"spam page {i} " * 10 for i in range(50)]
    pq.write_table(pa.table({"doc_id": [str(i) for i in range(100)], "text": texts, "scores": scores}),
                   tmp_path / "part-0.parquet")
    config = resolve_config("trainer", "tiny", ["text.source=x", "text.ratio=0.5", f"text.tokenizer={spm_tokenizer}",
                                                "text.eval_fraction=0", "text.quality.enabled=true",
                                                "text.quality.weights={wiki: 1.0}", "text.quality.floor=0.1"])
    stream, events = iter(TextStream([str(tmp_path / "part-0.parquet")], config, 20)), []
    while len(events) < 100:  # one pass over the 100 documents
        events += next(stream)["events"]
    reasons = [e["reason"] for e in events[:100]]
    # good documents are kept (p = 1), spam ones with p = floor = 0.1: ~45 of 100 sampled out
    assert set(reasons) == {"used", "sampled_out"} and 35 <= reasons.count("sampled_out") <= 52
    config["text"]["quality"]["column"] = "missing"
    with pytest.raises(ValueError, match="no column 'missing'"):
        _stream_events([str(tmp_path / "part-0.parquet")], config)


def test_text_tokenizer_must_be_the_audio_text_streams(tmp_path, spm_tokenizer):
    import webdataset as wds

    from moshi_data.pipeline.audio.recording import file_digest
    from moshi_data.trainer.train import check_same_tokenizer

    def shard(name, versions):
        path = tmp_path / name
        with open(path, "wb") as handle:
            writer = wds.TarWriter(handle, mtime=0.0)
            writer.write({"__key__": "a_00000", "meta.json": json.dumps({"model_versions": versions}).encode()})
            writer.close()
        return str(path)

    same = shard("same.tar", {"tokenizer": f"spm.model sha256:{file_digest(spm_tokenizer)}"})
    check_same_tokenizer(same, str(spm_tokenizer))
    check_same_tokenizer(shard("none.tar", {}), str(spm_tokenizer))  # no record of it: not checked
    with pytest.raises(ValueError, match="is not the one of the audio shards' text stream"):
        check_same_tokenizer(shard("other.tar", {"tokenizer": "spm.model sha256:0123456789abcdef"}), str(spm_tokenizer))


def test_held_out_batches_are_read_once(tmp_path, trainer_shards, text_corpus, spm_tokenizer, monkeypatch):
    """Evals at steps 2, 4 and 6 read the held-out documents and shards once (the first eval keeps
    its batches), and an unchanged model (lr 0) gets the same figures at every eval."""
    from collections import Counter

    from moshi_data.trainer.data import ShardStream

    opened: Counter = Counter()

    def counted(cls):
        original = cls.__iter__

        def iterate(self):
            opened[cls.__name__, self.train] += 1
            return original(self)

        monkeypatch.setattr(cls, "__iter__", iterate)

    counted(TextStream)
    counted(ShardStream)
    output = tmp_path / "run"
    train_main(["--shards", str(trainer_shards), "--output", str(output), "--steps", "6", "--preset", "tiny",
                *text_args(text_corpus, spm_tokenizer), "--set", "text.num_workers=0", "--set", "train.eval_every=2",
                "--set", "optim.lr=0.0"])
    evals = read_jsonl(output / "eval.jsonl")
    assert [e["step"] for e in evals] == [2, 4, 6] and evals[0]["eval_text_batches"] >= 1
    assert opened == {("TextStream", False): 1, ("ShardStream", False): 1, ("TextStream", True): 1,
                      ("ShardStream", True): 1}
    for name in ("eval_text_loss", "eval_loss"):
        assert evals[0][name] == evals[1][name] == evals[2][name], name
