"""YAML configuration: one file per job under ``configs/``, overridable from the command line.

Every threshold lives in a YAML file; code reads values from the loaded mapping and never
repeats a literal default. ``--set a.b=value`` overrides are parsed as YAML scalars.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# The checkout holding the package (models/, out/ and ../shared live beside it in development).
REPO_ROOT = PACKAGE_ROOT.parent
CONFIG_DIR = PACKAGE_ROOT / "configs"


def resolve_config_path(path_or_name: str | Path) -> Path:
    """Return the path of a config given a path or a bare name under ``configs/``."""
    candidate = Path(path_or_name)
    if candidate.is_file():
        return candidate
    for name in (str(path_or_name), f"{path_or_name}.yaml"):
        in_dir = CONFIG_DIR / name
        if in_dir.exists():
            return in_dir
    raise FileNotFoundError(f"config not found: {path_or_name} (looked in . and {CONFIG_DIR})")


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML) to a config mapping."""
    result = copy.deepcopy(dict(config))
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override must look like key.sub=value, got {item!r}")
        dotted, raw = item.split("=", 1)
        node = result
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {key!r} is not a mapping")
        node[keys[-1]] = yaml.safe_load(raw)
    return result


def load_config(path_or_name: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Load a YAML config (following an optional ``base:`` key naming another config)."""
    path = resolve_config_path(path_or_name)
    with open(path, encoding="utf-8") as handle:
        config = yaml.safe_load(handle) or {}
    base_name = config.pop("base", None)
    if base_name:
        config = deep_merge(load_config(base_name), config)
    return apply_overrides(config, overrides)
