"""Data pipeline: bad shards skipped and counted, worker-independent order, codes on the fly, s3 urls."""
from __future__ import annotations

import io
import shutil

import numpy as np
import pytest

from moshi_data.trainer.data import Batches, ShardStream, list_shards
from moshi_data.trainer.train import main as train_main
from moshi_data.trainer.train import read_jsonl


def raw_records(path):
    from webdataset.tariterators import tarfile_samples

    return list(tarfile_samples([{"url": str(path)}]))


def write_raw(path, records):
    import webdataset as wds

    with open(path, "wb") as handle:
        writer = wds.TarWriter(handle, mtime=0.0)
        for record in records:
            writer.write({k: v for k, v in record.items() if k != "__url__"})
        writer.close()


def npy(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def items(shards, config, workers=0, train=False, limit=None):
    dataset = ShardStream(shards, config, train=train)
    from torch.utils.data import DataLoader

    out = []
    for item in DataLoader(dataset, batch_size=None, num_workers=workers):
        out.append(item)
        if limit and len(out) == limit:
            break
    return out


@pytest.fixture(scope="module")
def bad_shards(tmp_path_factory, trainer_shards):
    """shard 0: good; shard 1: one good record + 4 bad ones; shard 2: a truncated tar."""
    directory = tmp_path_factory.mktemp("bad-shards")
    shutil.copy(trainer_shards / "shard-000000.tar", directory / "shard-000000.tar")
    good = raw_records(trainer_shards / "shard-000001.tar")[0]
    frames = np.load(io.BytesIO(good["text.npy"])).shape[0]
    missing = {k: v for k, v in good.items() if k != "text.npy"}
    two_d_text = {**good, "text.npy": npy(np.zeros((2, frames), np.int32))}
    short_codes = {**good, "codes.npy": npy(np.zeros((8, frames), np.int16))}
    big_text = {**good, "text.npy": npy(np.full(frames, 9999, np.int32))}
    records = [good, missing, two_d_text, short_codes, big_text]
    for index, record in enumerate(records):
        record["__key__"] = f"case_{index:05d}"
    write_raw(directory / "shard-000001.tar", records)
    data = (trainer_shards / "shard-000002.tar").read_bytes()
    (directory / "shard-000002.tar").write_bytes(data[: int(len(data) * 0.6)])
    return directory


def test_trainer_bad_shards_are_skipped_and_counted(bad_shards, tiny_config):
    shards = list_shards(str(bad_shards), "shard-*.tar")
    seen = items(shards, tiny_config)
    kept = [item for item in seen if item["tokens"] is not None]
    rejected = {item["key"] or item["url"].rsplit("/", 1)[-1]: item["reason"] for item in seen if item["tokens"] is None}
    assert len(kept) == 2 and len(rejected) == 5
    assert "missing text.npy" in rejected["case_00001"]
    assert "text.npy must be 1-D" in rejected["case_00002"]
    assert "codes.npy must be [16, frames]" in rejected["case_00003"]
    assert "text_vocab_size=8000" in rejected["case_00004"]
    assert rejected["shard-000002.tar"].startswith("shard read error")


def test_trainer_fast_path_without_audio_decoding(bad_shards, trainer_shards, tiny_config):
    """data.decode_audio=false: same tokens from codes.npy, same rejections of bad text/codes."""
    fast = {**tiny_config, "data": {**tiny_config["data"], "decode_audio": False}}
    shards = list_shards(str(trainer_shards), "shard-*.tar")
    assert all((a["tokens"] == b["tokens"]).all() for a, b in zip(items(shards, fast), items(shards, tiny_config)))
    seen = items(list_shards(str(bad_shards), "shard-*.tar"), fast)
    assert sum(item["tokens"] is None for item in seen) == 5 and len(seen) == 7


def test_trainer_run_logs_rejects(bad_shards, tmp_path):
    output = tmp_path / "run"
    train_main(["--shards", str(bad_shards), "--output", str(output), "--steps", "2", "--preset", "tiny",
                "--set", "data.eval_shards=0", "--set", "train.batch_size=2"])
    rejects = read_jsonl(output / "rejects.jsonl")
    log = read_jsonl(output / "log.jsonl")
    assert len(rejects) == log[-1]["rejected"] >= 4
    assert log[-1]["data_position"] == log[-1]["samples"] + log[-1]["rejected"]  # in = kept + rejected
    assert all(r["reason"] for r in rejects)


def test_trainer_item_order_ignores_worker_count(trainer_shards, tiny_config):
    shards = list_shards(str(trainer_shards), "shard-*.tar")[:2]
    one = items(shards, tiny_config, workers=0, train=True, limit=8)
    two = items(shards, tiny_config, workers=2, train=True, limit=8)
    assert [i["index"] for i in one] == list(range(8))
    assert [i["key"] for i in one] == [i["key"] for i in two]
    assert all((a["tokens"] == b["tokens"]).all() for a, b in zip(one, two))
    windows = {i["tokens"].numpy().tobytes() for i in one}
    assert len(windows) > 2  # the same 2 samples give other random windows in later epochs


def test_trainer_codes_on_the_fly_equal_stored(tmp_path, trainer_shards, tiny_config, codec):
    """codes.npy (written with pipeline.audio.codec.encode_streams) and on-the-fly codes are the same."""
    record = raw_records(trainer_shards / "shard-000000.tar")[0]
    write_raw(tmp_path / "shard-000000.tar", [{k: v for k, v in record.items() if k != "codes.npy"}])
    stored = items([str(trainer_shards / "shard-000000.tar")], tiny_config)[0]["tokens"]
    on_the_fly = items([str(tmp_path / "shard-000000.tar")], tiny_config)[0]["tokens"]
    assert on_the_fly.shape == stored.shape == (17, 50)
    assert (on_the_fly == stored).all()
    assert len(np.unique(stored[1:9])) > 20  # the stand-in Mimi's codes vary with the audio


def test_trainer_reads_s3_shards(trainer_shards, tiny_config, fake_aws_env):
    boto3 = pytest.importorskip("boto3")
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket="data")
        for path in sorted(trainer_shards.glob("shard-*.tar")):
            client.upload_file(str(path), "data", f"audio/shards/{path.name}")
        client.put_object(Bucket="data", Key="audio/shards/notes.txt", Body=b"not a shard")
        urls = list_shards("s3://data/audio/shards", "shard-*.tar")
        assert urls == [f"s3://data/audio/shards/shard-00000{i}.tar" for i in range(3)]
        remote = items(urls, tiny_config)
    local = items(list_shards(str(trainer_shards), "shard-*.tar"), tiny_config)
    assert [i["key"] for i in remote] == [i["key"] for i in local]
    assert all((a["tokens"] == b["tokens"]).all() for a, b in zip(remote, local))


def test_trainer_batches_count_positions(trainer_shards, tiny_config):
    dataset = ShardStream(list_shards(str(trainer_shards), "shard-*.tar"), tiny_config, train=False)
    rejected = []
    batches = Batches(dataset, 2, 0, 1, 10, rejected.append, drop_last=False)
    shapes = [tuple(batch.shape) for batch in batches]
    assert shapes == [(2, 17, 50), (1, 17, 50)] and batches.position == 3 and not rejected
