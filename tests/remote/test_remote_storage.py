"""Object-storage writes on the suite's S3 server (moto): empty files, multipart-sized files,
overwriting an earlier run's objects and writes that fail part way, through the same paths the
jobs use (pipeline/storage.py)."""
from __future__ import annotations

import errno
import io
import os

import pytest
from apache_beam.io.localfilesystem import LocalFileSystem
from boto3.s3.transfer import TransferConfig

from moshi_data.pipeline import storage

BUCKET = "remote-storage"
MULTIPART_BYTES = TransferConfig().multipart_threshold  # boto3 uploads from this size in parts
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


@pytest.mark.parametrize("size", [0, 1, MULTIPART_BYTES - 1, MULTIPART_BYTES, 2 * MULTIPART_BYTES + 17])
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


@pytest.mark.parametrize("size", [0, 3 * MULTIPART_BYTES // 2])
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


class _FailingFile(io.FileIO):
    """A local file whose reads fail (EIO) past ``limit`` bytes, as a bad disk or a lost mount does."""
    limit = 0

    def readinto(self, buffer):
        if self.tell() >= self.limit:
            raise OSError(errno.EIO, "read failed part way")
        return super().readinto(buffer)


def _open_failing_after(limit: int):
    def open_failing(path, mode="r", *args, **kwargs):
        assert mode == "rb"
        raw = _FailingFile(path)
        raw.limit = limit
        return io.BufferedReader(raw)
    return open_failing


def test_an_s3_upload_that_fails_part_way_leaves_the_earlier_object_and_no_open_upload(bucket, tmp_path, monkeypatch):
    path = f"s3://{BUCKET}/out/shards/shard-000000.tar"
    storage.write_bytes_atomic(path, b"earlier run")
    source = tmp_path / "shard.tar"
    source.write_bytes(os.urandom(MULTIPART_BYTES + 3 * 2**20))
    monkeypatch.setattr(storage, "open", _open_failing_after(MULTIPART_BYTES + 2**20), raising=False)
    with pytest.raises(OSError, match="read failed part way"):
        storage.upload_file(str(source), path)
    assert storage.read_bytes(path) == b"earlier run"  # not the bytes read before the failure
    assert not bucket.list_multipart_uploads(Bucket=BUCKET).get("Uploads")  # aborted, not left open
    assert storage.list_folder(f"s3://{BUCKET}/out/shards") == [path]


class FolderStore(LocalFileSystem):
    """Test double of a store Beam reaches only through its FileSystems, as gs:// (whose client is not
    installed here): ``folderstore://x`` is the local file /x, written in place and shown on close,
    even when the writer failed, as Beam's object-store writers do."""

    @classmethod
    def scheme(cls):
        return "folderstore"

    @staticmethod
    def _local(path):
        return path[len("folderstore:/"):]

    def create(self, path, *args, **kwargs):
        return super().create(self._local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(self._local(path), *args, **kwargs)

    def rename(self, sources, destinations):
        super().rename([self._local(p) for p in sources], [self._local(p) for p in destinations])

    def exists(self, path):
        return super().exists(self._local(path))

    def delete(self, paths):
        for path in paths:
            os.remove(self._local(path))


def test_a_write_to_another_object_store_that_fails_part_way_leaves_the_earlier_object(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    path = f"folderstore:/{folder}/index.jsonl"
    storage.write_bytes_atomic(path, b"earlier run")
    assert storage.read_bytes(path) == b"earlier run" and sorted(p.name for p in folder.iterdir()) == ["index.jsonl"]
    source = tmp_path / "index.jsonl"
    source.write_bytes(os.urandom(3 * storage.COPY_CHUNK_BYTES))
    monkeypatch.setattr(storage, "open", _open_failing_after(2 * storage.COPY_CHUNK_BYTES), raising=False)
    with pytest.raises(OSError, match="read failed part way"):
        storage.upload_file(str(source), path)
    assert (folder / "index.jsonl").read_bytes() == b"earlier run"
    assert sorted(p.name for p in folder.iterdir()) == ["index.jsonl"]  # its temporary deleted

    def refuse(self, paths):
        raise PermissionError("store refuses deletes")
    monkeypatch.setattr(FolderStore, "delete", refuse)
    with pytest.raises(OSError, match="read failed part way"):  # the write's error, not the cleanup's
        storage.upload_file(str(source), path)
    assert (folder / "index.jsonl").read_bytes() == b"earlier run"
