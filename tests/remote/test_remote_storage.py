"""Object-storage writes on the suite's S3 server (moto): empty files, multipart-sized files and
overwriting an earlier run's objects, through the same paths the jobs use (pipeline/storage.py)."""
from __future__ import annotations

import os

import pytest

from moshi_data.pipeline import storage

BUCKET = "remote-storage"
pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def bucket(s3_client, s3_endpoint):
    from apache_beam.options.pipeline_options import PipelineOptions

    s3_client.create_bucket(Bucket=BUCKET)
    storage.configure(PipelineOptions([f"--s3_endpoint_url={s3_endpoint}", "--s3_access_key_id=testing",
                                       "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"]))
    yield s3_client
    for item in s3_client.list_objects_v2(Bucket=BUCKET).get("Contents", []):
        s3_client.delete_object(Bucket=BUCKET, Key=item["Key"])


@pytest.mark.parametrize("size", [0, 1, storage.S3_MIN_PART_BYTES - 1, storage.S3_MIN_PART_BYTES,
                                  2 * storage.S3_MIN_PART_BYTES + 17])
def test_write_read_any_size(bucket, size):
    data = os.urandom(size)
    path = f"s3://{BUCKET}/out/file-{size}.bin"
    storage.write_bytes_atomic(path, data)
    assert storage.read_bytes(path) == data
    assert bucket.head_object(Bucket=BUCKET, Key=f"out/file-{size}.bin")["ContentLength"] == size
    assert not bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # none left open


def test_overwrite_earlier_run_and_remove_stale(bucket):
    storage.write_bytes_atomic(f"s3://{BUCKET}/out/stats.json", b'{"run": 1}' * 1000)
    storage.write_bytes_atomic(f"s3://{BUCKET}/out/documents/00000.parquet", b"old")
    storage.write_bytes_atomic(f"s3://{BUCKET}/out/documents/00001.parquet", b"old, not written again")
    storage.write_bytes_atomic(f"s3://{BUCKET}/out/stats.json", b"")  # shorter, even empty, replaces whole
    storage.write_bytes_atomic(f"s3://{BUCKET}/out/documents/00000.parquet", b"new")
    assert storage.read_bytes(f"s3://{BUCKET}/out/stats.json") == b""
    assert storage.remove_stale(f"s3://{BUCKET}/out/documents", ["00000.parquet"]) == [
        f"s3://{BUCKET}/out/documents/00001.parquet"]
    assert storage.list_folder(f"s3://{BUCKET}/out/documents") == [f"s3://{BUCKET}/out/documents/00000.parquet"]
    assert storage.read_bytes(f"s3://{BUCKET}/out/documents/00000.parquet") == b"new"


@pytest.mark.parametrize("size", [0, 3 * storage.S3_MIN_PART_BYTES // 2])
def test_upload_file(bucket, tmp_path, size):
    local = tmp_path / "shard.tar"
    local.write_bytes(os.urandom(size))
    storage.upload_file(str(local), f"s3://{BUCKET}/shards/shard.tar")
    assert storage.read_bytes(f"s3://{BUCKET}/shards/shard.tar") == local.read_bytes()


def test_audio_outputs_write_empty_rejects_and_shards_to_s3(bucket, tmp_path):
    storage.write_bytes_atomic(f"s3://{BUCKET}/audio/rejects/part-000000.jsonl", b"")
    assert storage.read_bytes(f"s3://{BUCKET}/audio/rejects/part-000000.jsonl") == b""
    assert storage.list_folder(f"s3://{BUCKET}/audio/rejects") == [f"s3://{BUCKET}/audio/rejects/part-000000.jsonl"]  # no .tmp left


def test_upload_file_to_a_local_path_streams_through_a_temporary(tmp_path):
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(3 * storage.COPY_CHUNK_BYTES + 7))
    target = tmp_path / "out" / "index.jsonl"
    storage.upload_file(str(source), str(target))
    assert target.read_bytes() == source.read_bytes() and sorted(p.name for p in target.parent.iterdir()) == ["index.jsonl"]


def test_a_local_write_that_fails_leaves_the_earlier_file_and_no_temporary(tmp_path):
    target = tmp_path / "out" / "stats.json"
    storage.write_bytes_atomic(str(target), b"earlier run")
    with pytest.raises(TypeError):
        storage.write_bytes_atomic(str(target), "not bytes")
    with pytest.raises(FileNotFoundError):
        storage.upload_file(str(tmp_path / "missing.bin"), str(target))
    assert target.read_bytes() == b"earlier run" and sorted(p.name for p in target.parent.iterdir()) == ["stats.json"]
