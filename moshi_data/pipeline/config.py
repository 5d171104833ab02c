"""YAML configuration: one file of defaults per job under ``moshi_data/configs/``, strictly checked.

Every threshold lives in a YAML file; code reads values from the loaded mapping and never repeats a
literal default. A config is resolved as: packaged defaults (following ``base:``) <- a user YAML
(``--config my.yaml``, may be partial) <- ``--set a.b=value`` overrides (values parsed as YAML).

Both the user YAML and the overrides are checked against the defaults: an unknown key is an error
naming the closest known key, and a value must have the default's type (int, float — an int is
accepted and converted —, bool, str, list or mapping). ``null`` is accepted everywhere (several
settings document ``null`` as "off" or "auto") and a key whose default is ``null`` accepts any value.
Open-ended tables — a mapping whose default is empty (``{}``) or a path in :data:`OPEN_MAPPINGS`
(label tables, presets) — accept new keys; values of keys they already have are still checked.
"""
from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# Where relative paths of the configs (models/, out/, ../shared) resolve: the checkout holding the
# package in development; for a package installed from a wheel (site-packages), the working folder.
REPO_ROOT = PACKAGE_ROOT.parent if (PACKAGE_ROOT.parent / "pyproject.toml").is_file() else Path.cwd()
CONFIG_DIR = PACKAGE_ROOT / "configs"

# Dotted paths (in any config) of tables whose keys are data, not settings.
OPEN_MAPPINGS = frozenset({"labels", "presets", "bench.peak_flops", "evaluation.word_alignment_sets", "jsonl.fields"})


class ConfigError(ValueError):
    """A config file or override that does not fit the defaults (a user error: one line, exit 2)."""


def resolve_config_path(path_or_name: str | Path) -> Path:
    """Return the path of a config given a path or a bare name under ``configs/``."""
    candidate = Path(path_or_name)
    if candidate.is_file():
        return candidate
    for name in (str(path_or_name), f"{path_or_name}.yaml"):
        in_dir = CONFIG_DIR / name
        if in_dir.is_file():
            return in_dir
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise FileNotFoundError(f"config not found: {path_or_name} (not a file, nor one of the packaged configs: {known})")


def is_packaged(path: Path) -> bool:
    return path.resolve().parent == CONFIG_DIR.resolve()


def get_dotted(mapping: Mapping[str, Any], dotted: str) -> Any:
    """``mapping[a][b]`` for ``dotted == "a.b"``; ``None`` when a step is missing."""
    node: Any = mapping
    for key in dotted.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base`` (no checks: see :func:`merge_checked`)."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _closest(key: str, known: Iterable[str], prefix: str) -> str:
    known = list(known)
    match = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    if match:
        return f"; did you mean {prefix + match[0]!r}?"
    return f"; known keys here: {', '.join(sorted(known))}" if known else ""


def check_value(path: str, value: Any, default: Any) -> Any:
    """``value`` if it has the type of ``default`` (ints become floats where a float is expected)."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif isinstance(default, str):
        ok = isinstance(value, str)
    elif isinstance(default, list):
        ok = isinstance(value, list)
    elif isinstance(default, Mapping):
        ok = isinstance(value, Mapping)
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise ConfigError(f"{path}: expected {_type_name(default)} (like the default {_show(default)}), "
                          f"got {_type_name(value)} {_show(value)}")
    return value


def _type_name(value: Any) -> str:
    for kind, name in ((bool, "a boolean"), (int, "an integer"), (float, "a number"), (str, "a string"),
                       (list, "a list"), (Mapping, "a mapping")):
        if isinstance(value, kind):
            return name
    return type(value).__name__


def _show(value: Any) -> str:
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    text = text[:-4].strip() if text.endswith("...") else text
    return text if len(text) <= 60 else text[:57] + "..."


def merge_checked(defaults: Mapping[str, Any], update: Mapping[str, Any], prefix: str = "",
                  source: str = "config") -> dict[str, Any]:
    """Merge ``update`` over ``defaults``; every key of ``update`` must exist in ``defaults`` (unless the
    mapping is open-ended) and every value must have the default's type."""
    merged = copy.deepcopy(dict(defaults))
    open_ended = not defaults or prefix.rstrip(".") in OPEN_MAPPINGS
    for key, value in update.items():
        path = f"{prefix}{key}"
        if key not in merged:
            if not open_ended:
                raise ConfigError(f"{source}: unknown key {path!r}{_closest(str(key), merged, prefix)}")
            merged[key] = copy.deepcopy(value)
            continue
        default = merged[key]
        if isinstance(default, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_checked(default, value, f"{path}.", source)
        else:
            try:
                merged[key] = copy.deepcopy(check_value(path, value, default))
            except ConfigError as error:
                raise ConfigError(f"{source}: {error}") from None
    return merged


def parse_override(item: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML)."""
    dotted, sep, raw = item.partition("=")
    if not sep or not dotted.strip() or any(not key for key in dotted.split(".")):
        raise ConfigError(f"--set {item!r}: expected KEY.SUB=VALUE")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as error:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({_yaml_problem(error)})") from None
    return dotted.strip().split("."), value


def apply_overrides(config: Mapping[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides (values parsed as YAML), each checked against ``config``.

    A string setting keeps the raw text when YAML would read it as another type (``job_name=123``)."""
    result = copy.deepcopy(dict(config))
    for item in overrides:
        keys, value = parse_override(item)
        node, default = result, result
        for depth, key in enumerate(keys[:-1]):
            default = node.get(key) if isinstance(node, Mapping) else None
            if not isinstance(default, Mapping):
                if key not in node and not _open(node, keys[:depth]):
                    raise ConfigError(f"--set {item!r}: unknown key {'.'.join(keys[:depth + 1])!r}"
                                      f"{_closest(key, node, '.'.join(keys[:depth]) + '.' if depth else '')}")
                if key in node and node[key] is not None:
                    raise ConfigError(f"--set {item!r}: {'.'.join(keys[:depth + 1])!r} is not a mapping")
                node[key] = {}
            node = node[key]
        last = keys[-1]
        if last in node:
            if isinstance(node[last], str) and value is not None and not isinstance(value, str):
                value = item.partition("=")[2]
            if isinstance(node[last], Mapping) and isinstance(value, Mapping):
                value = merge_checked(node[last], value, f"{'.'.join(keys)}.", f"--set {item!r}")
            else:
                try:
                    value = check_value(".".join(keys), value, node[last])
                except ConfigError as error:
                    raise ConfigError(f"--set {item!r}: {error}") from None
        elif not _open(node, keys[:-1]):
            prefix = ".".join(keys[:-1]) + "." if len(keys) > 1 else ""
            raise ConfigError(f"--set {item!r}: unknown key {'.'.join(keys)!r}{_closest(last, node, prefix)}")
        node[last] = value
    return result


def _open(node: Mapping[str, Any], keys: list[str]) -> bool:
    return not node or ".".join(keys) in OPEN_MAPPINGS


def _yaml_problem(error: yaml.YAMLError) -> str:
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def read_yaml(path: Path) -> dict[str, Any]:
    """A YAML file that holds a mapping (empty file = {}); malformed YAML is a one-line ConfigError."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.safe_load(handle)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: malformed YAML: {_yaml_problem(error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {_type_name(data)}")
    return data


def load_config(path_or_name: str | Path, overrides: Iterable[str] = (), defaults: str | None = None) -> dict[str, Any]:
    """Resolve a config: packaged defaults <- user YAML (checked, may be partial) <- ``overrides`` (checked).

    A packaged config (a bare name such as ``text_corpus``) follows its ``base:`` key. A user YAML is
    merged over the config named by its own ``base:`` key, else over ``defaults`` (the command's
    packaged config); a user YAML with neither is taken as complete.
    """
    path = resolve_config_path(path_or_name)
    config = read_yaml(path)
    base_name = config.pop("base", None)
    if is_packaged(path):
        if base_name:
            config = deep_merge(load_config(base_name), config)
    else:
        base_name = base_name or defaults
        if base_name:
            config = merge_checked(load_config(base_name), config, source=str(path))
    return apply_overrides(config, overrides)
