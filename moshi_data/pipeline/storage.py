"""Paths on local disk, s3://, gs:// (Beam FileSystems; s3 through boto3) and https:// (read only).

Writes are atomic, also when the writer fails part way: readers of ``path`` see the earlier file or
the complete new one, never a part. A local file is written to a hidden temporary beside it and
renamed over it. S3 gets boto3's managed upload through the Beam-configured client (one PutObject
for a small object, a multipart upload for a large one, which S3 only shows once completed and
which boto3 aborts on any error, a failed read of the source included). Another object store
(gs://, through Beam's FileSystems, whose writers publish what they hold when closed, even on an
error) gets a hidden temporary object renamed over ``path``, deleted on error.
"""
from __future__ import annotations

import gzip
import io
import os
import shutil
import urllib.request
import uuid
from contextlib import contextmanager
from typing import IO, Iterable, Iterator

TMP_PREFIX = ".tmp-"
HTTP_SCHEMES = ("http://", "https://")
COMMON_CRAWL_BASE = "https://data.commoncrawl.org/"
COPY_CHUNK_BYTES = 1 << 20


def _filesystems():
    """Beam's FileSystems with this process's options: the job's (set by ``configure`` on the
    launcher, by the SDK harness on a worker), else empty ones, so boto3 reads the environment
    (AWS_ENDPOINT_URL_S3, AWS_ACCESS_KEY_ID, ...)."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.options.value_provider import RuntimeValueProvider

    if FileSystems._pipeline_options is None and RuntimeValueProvider.runtime_options is None:
        FileSystems.set_options(PipelineOptions([]))
    return FileSystems


def _s3_client():
    """The boto3 client Beam's S3 filesystem would use (same endpoint, credentials and region)."""
    from apache_beam.io.aws.clients.s3.boto3_client import Client
    from apache_beam.options.value_provider import RuntimeValueProvider

    options = _filesystems()._pipeline_options or RuntimeValueProvider.runtime_options
    return Client(options=options).client


def probe(folder: str, timeout_s: float = 10.0) -> None:
    """Raise at once (not after Beam's minutes of retries) when the object store holding ``folder``
    cannot be reached or refuses the credentials; s3 uses Beam's S3 options with short timeouts."""
    if is_local(folder) or folder.startswith(HTTP_SCHEMES):
        return
    if not folder.startswith("s3://"):
        list_folder(folder)
        return
    import boto3
    from apache_beam.io.aws.s3io import parse_s3_path
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options
    from apache_beam.options.value_provider import RuntimeValueProvider
    from botocore.config import Config

    options = _filesystems()._pipeline_options or PipelineOptions.from_dictionary(RuntimeValueProvider.runtime_options)
    s3 = options.view_as(S3Options)
    client = boto3.session.Session().client(
        "s3", region_name=s3.s3_region_name, endpoint_url=s3.s3_endpoint_url, use_ssl=not s3.s3_disable_ssl,
        verify=s3.s3_verify, aws_access_key_id=s3.s3_access_key_id, aws_secret_access_key=s3.s3_secret_access_key,
        aws_session_token=s3.s3_session_token,
        config=Config(connect_timeout=timeout_s, read_timeout=timeout_s, retries={"max_attempts": 1}))
    bucket, prefix = parse_s3_path(folder.rstrip("/") + "/", object_optional=True)
    client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)


def _s3_upload(source: IO[bytes], path: str) -> None:
    """Stream ``source`` to the S3 object ``path``: boto3's managed transfer, which aborts its
    multipart upload (nothing becomes ``path``) when reading or sending fails."""
    from apache_beam.io.aws.s3io import parse_s3_path

    bucket, key = parse_s3_path(path)
    _s3_client().upload_fileobj(source, bucket, key)


def configure(pipeline_options) -> None:
    """Hand pipeline options (e.g. ``--s3_endpoint_url``) to Beam's filesystems in this process."""
    _filesystems().set_options(pipeline_options)


def is_local(path: str) -> bool:
    return "://" not in path or path.startswith("file://")


def _local(path: str) -> str:
    return path[len("file://"):] if path.startswith("file://") else path


def join(base: str, *parts: str) -> str:
    if is_local(base):
        return os.path.join(_local(base), *parts)
    return "/".join([base.rstrip("/"), *parts])


def open_read(path: str) -> IO[bytes]:
    """Open a file for binary reading without any decompression."""
    if path.startswith(HTTP_SCHEMES):
        return urllib.request.urlopen(path, timeout=60)  # noqa: S310 - user-given data URL
    if is_local(path):
        return open(_local(path), "rb")
    from apache_beam.io.filesystem import CompressionTypes

    return _filesystems().open(path, compression_type=CompressionTypes.UNCOMPRESSED)


def read_bytes(path: str) -> bytes:
    with open_read(path) as handle:
        return handle.read()


def exists(path: str) -> bool:
    if path.startswith(HTTP_SCHEMES):
        return True
    if is_local(path):
        return os.path.exists(_local(path))
    return _filesystems().exists(path)


def size(path: str) -> int | None:
    """The stored size of ``path`` in bytes (local stat, HTTP Content-Length, object-store metadata), None
    where it cannot be learned (a missing file, a server without Content-Length, an unreachable store)."""
    try:
        if is_local(path):
            return os.path.getsize(_local(path))
        if path.startswith(HTTP_SCHEMES):
            request = urllib.request.Request(path, method="HEAD")
            with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 - user-given data URL
                length = response.headers.get("Content-Length")
                return int(length) if length else None
        [match] = _filesystems().match([path])
        return match.metadata_list[0].size_in_bytes if match.metadata_list else None
    except Exception:  # noqa: BLE001 - unknown size: the caller decides (a missing file is a reject later)
        return None


def sizes(paths: list[str], threads: int = 16) -> list[int | None]:
    """:func:`size` of each path; remote ones looked up ``threads`` at a time."""
    if all(is_local(path) for path in paths):
        return [size(path) for path in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(size, paths))


def makedirs(path: str) -> None:
    if is_local(path):
        os.makedirs(_local(path), exist_ok=True)


def _temporary(path: str) -> str:
    """A hidden, unique name beside ``path`` (what stale-file removal deletes if a run dies)."""
    folder, name = os.path.split(_local(path)) if is_local(path) else path.rsplit("/", 1)
    return join(folder, f"{TMP_PREFIX}{name}-{uuid.uuid4().hex}")


@contextmanager
def _open_write(path: str) -> Iterator[IO[bytes]]:
    """A handle whose bytes become ``path`` only when the block ends without error: written to a
    hidden temporary beside it (a local file fsync'ed), renamed over ``path``; removed on error.
    (S3 does not come here: see :func:`_s3_upload`.)"""
    if path.startswith(HTTP_SCHEMES):
        raise ValueError(f"cannot write to {path}: http(s) is read-only")
    tmp = _temporary(path)
    if not is_local(path):
        from apache_beam.io.filesystem import CompressionTypes

        filesystems = _filesystems()
        try:
            with filesystems.create(tmp, compression_type=CompressionTypes.UNCOMPRESSED) as handle:
                yield handle  # on an error, closing still publishes the temporary: deleted below
            filesystems.rename([tmp], [path])
        except BaseException:
            try:
                if filesystems.exists(tmp):
                    filesystems.delete([tmp])
            except Exception:  # noqa: BLE001 - raise the write's own error; a hidden temporary left
                pass  # behind is deleted by the next run's stale-file join
            raise
        return
    local = _local(path)
    os.makedirs(os.path.dirname(local) or ".", exist_ok=True)
    try:
        with open(tmp, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, local)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Write ``data`` so that readers see either nothing/the old file or the complete new file."""
    if path.startswith("s3://"):
        _s3_upload(io.BytesIO(data), path)
        return
    with _open_write(path) as handle:
        handle.write(data)


def upload_file(local_path: str, path: str) -> None:
    """Copy a local file to ``path`` (atomic like :func:`write_bytes_atomic`), streamed."""
    with open(local_path, "rb") as source:
        if path.startswith("s3://"):
            _s3_upload(source, path)
            return
        with _open_write(path) as target:
            shutil.copyfileobj(source, target, length=COPY_CHUNK_BYTES)


def list_folder(folder: str) -> list[str]:
    """Full paths of the files directly inside ``folder`` (empty when it does not exist), sorted."""
    if is_local(folder):
        local = _local(folder)
        if not os.path.isdir(local):
            return []
        return sorted(os.path.join(local, n) for n in os.listdir(local) if os.path.isfile(os.path.join(local, n)))
    [result] = _filesystems().match([join(folder, "*")])
    return sorted(m.path for m in result.metadata_list)


def lists_from_name(folder: str) -> bool:
    """Whether :func:`iter_names` lists only the asked name range of ``folder`` (local disk, S3), not the
    whole folder, filtered (gs:// and any other store reached through Beam's FileSystems)."""
    return is_local(folder) or folder.startswith("s3://")


def iter_names(folder: str, after: str | None = None, upto: str | None = None) -> Iterator[str]:
    """Names of the files directly inside ``folder`` with ``after < name <= upto`` (None: unbounded).
    Where the store lists from a name (:func:`lists_from_name`) they are streamed and no listing is
    held: S3 lists only that range, a page of keys at a time (ListObjectsV2 from ``StartAfter``, in key
    order); a local folder is scanned entry by entry. Another store (gs://) is matched whole by Beam's
    FileSystems (that listing is held), then filtered."""
    def wanted(name: str) -> bool:
        return (after is None or name > after) and (upto is None or name <= upto)

    if is_local(folder):
        local = _local(folder)
        if os.path.isdir(local):
            with os.scandir(local) as entries:
                yield from (entry.name for entry in entries if entry.is_file() and wanted(entry.name))
        return
    if not lists_from_name(folder):
        yield from (name for name in (os.path.basename(p) for p in list_folder(folder)) if wanted(name))
        return
    from apache_beam.io.aws.s3io import parse_s3_path

    bucket, prefix = parse_s3_path(folder.rstrip("/") + "/", object_optional=True)
    request = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
    if after is not None:
        request["StartAfter"] = prefix + after
    for page in _s3_client().get_paginator("list_objects_v2").paginate(**request):
        for item in page.get("Contents", []):  # in key (UTF-8 byte = code point) order
            name = item["Key"][len(prefix):]
            if upto is not None and name > upto:
                return
            if name:
                yield name


def retire_completion_marker(path: str, log=print) -> bool:
    """Delete an earlier run's completion marker (``stats.json``) just before a run starts, so a
    run killed half-way never leaves the earlier run's marker beside its own partial files."""
    if not exists(path):
        return False
    delete([path])
    log(f"output holds an earlier run: removed its {path}; files this run does not rewrite are removed at its end")
    return True


def list_tree(folder: str) -> list[str]:
    """Full paths of every file under ``folder`` (recursively), sorted."""
    if is_local(folder):
        root = _local(folder)
        return sorted(os.path.join(d, n) for d, _, names in os.walk(root) for n in names)
    [result] = _filesystems().match([join(folder, "**")])
    return sorted(m.path for m in result.metadata_list)


def delete(paths: Iterable[str]) -> None:
    paths = list(paths)
    local = [_local(p) for p in paths if is_local(p)]
    remote = [p for p in paths if not is_local(p)]
    for path in local:
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
    if remote:
        _filesystems().delete(remote)


def remove_stale(folder: str, keep_names: Iterable[str]) -> list[str]:
    """Delete files in ``folder`` not named in ``keep_names`` (leftover temporaries, old shards)."""
    keep = set(keep_names)
    stale = [p for p in list_folder(folder) if os.path.basename(p.rstrip("/")) not in keep]
    delete(stale)
    return stale


def remove_temporaries(folder: str) -> None:
    """Delete temporaries left in a local ``folder`` by a killed run. S3 writes leave none (their
    uploads complete or abort); a gs:// write killed part way can leave a hidden ``.tmp-`` object,
    removed by the stale-file join in the job's folders but not at the output's top (Beam matches a
    gs:// folder by listing everything under it)."""
    if is_local(folder):
        delete(p for p in list_folder(folder) if os.path.basename(p).startswith(TMP_PREFIX))


def _has_glob(path: str) -> bool:
    return any(ch in path for ch in "*?[")


def _read_listing(path: str) -> list[str]:
    data = read_bytes(path)
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    lines = [line.strip() for line in data.decode("utf-8").splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def expand_inputs(spec: str, limit: int | None = None) -> list[str]:
    """Turn an input spec into an ordered list of file paths/URLs.

    ``spec`` is a comma-separated list whose items are paths/URLs, globs, text files listing paths
    (``*.txt``/``*.list``), or Common Crawl ``wet.paths.gz`` listings (relative keys are resolved
    against https://data.commoncrawl.org/). Globs are sorted; ``limit`` keeps the first N files.
    A glob that matches nothing raises: it is a mistake in the command, not bad data.
    """
    files: list[str] = []
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        if item.endswith("paths.gz") or item.endswith((".txt", ".list")):
            for entry in _read_listing(item):
                files.append(entry if "://" in entry or entry.startswith("/") else COMMON_CRAWL_BASE + entry)
        elif _has_glob(item):
            matched = _match_glob(item)
            if not matched:
                raise FileNotFoundError(f"input glob matched no file: {item}")
            files.extend(matched)
        else:
            files.append(item)
        if limit is not None and len(files) >= limit:
            break
    return files[:limit] if limit is not None else files


def _match_glob(pattern: str) -> list[str]:
    if is_local(pattern):
        import glob

        return sorted(p for p in glob.glob(_local(pattern), recursive=True) if os.path.isfile(p))
    [result] = _filesystems().match([pattern])
    return sorted(m.path for m in result.metadata_list)


def copy_to_local(path: str, destination: str) -> str:
    """Download ``path`` to ``destination`` atomically (used by the model cache)."""
    os.makedirs(os.path.dirname(destination) or ".", exist_ok=True)
    tmp = f"{destination}{TMP_PREFIX}{uuid.uuid4().hex}"
    with open_read(path) as source, open(tmp, "wb") as target:
        shutil.copyfileobj(source, target, length=COPY_CHUNK_BYTES)
    os.replace(tmp, destination)
    return destination
