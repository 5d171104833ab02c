"""Model cache: ``ensure_models(config)`` returns the fuzzy-dedup and quality model paths, training
whichever is missing. Files are named by a hash of their training config and data identity, so a
changed config or source retrains, and an unchanged one reuses the cached model."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from classifiers.common import cache_key, models_dir
from classifiers.fuzzy_dedup import fuzzy_model_path, samples_paths, train_fuzzy
from classifiers.line_samples import write_default_line_samples
from classifiers.quality import quality_model_path, train_quality


def _write_json(path: Path, payload: Any) -> None:
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        json.dump(payload, out, indent=2, sort_keys=True)
    os.replace(tmp, path)


def line_sample_files(config: Mapping[str, Any], line_samples: str | None = None) -> list[str]:
    """Line samples to train the fuzzy model on: given, configured, or produced from the default input."""
    pattern = line_samples or config["fuzzy_dedup"]["samples"]
    if pattern:
        return samples_paths(pattern, config["data_root"])
    return [str(write_default_line_samples(config))]


def ensure_models(
    config: Mapping[str, Any], line_samples: str | None = None, log: Callable[[str], None] = print
) -> dict[str, Path]:
    """Paths of the fuzzy-dedup and quality models, training those missing from the cache."""
    models_dir(config).mkdir(parents=True, exist_ok=True)
    samples = line_sample_files(config, line_samples)
    paths = {"fuzzy_dedup": fuzzy_model_path(config, samples), "quality": quality_model_path(config)}
    if not paths["fuzzy_dedup"].exists():
        log(f"training fuzzy-dedup model -> {paths['fuzzy_dedup']}")
        info = train_fuzzy(config, samples, paths["fuzzy_dedup"])
        _write_json(paths["fuzzy_dedup"].with_suffix(".json"), {"samples": samples, **info})
    if not paths["quality"].exists():
        log(f"training quality model -> {paths['quality']}")
        info = train_quality(config, paths["quality"])
        _write_json(paths["quality"].with_suffix(".json"), info)
    return paths


__all__ = ["ensure_models", "cache_key"]
