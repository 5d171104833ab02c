"""Model cache: ``ensure_models(config)`` returns the fuzzy-dedup and quality model paths, training
whichever is missing. Files are named by a hash of their training config and data identity, so a
changed config or source retrains, and an unchanged one reuses the cached model."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping

from moshi_data.classifiers.common import models_dir
from moshi_data.classifiers.fuzzy_dedup import fuzzy_model_path, samples_paths, train_fuzzy
from moshi_data.classifiers.line_samples import write_default_line_samples
from moshi_data.classifiers.quality import LabelCorpus, quality_model_path, train_quality
from moshi_data.pipeline.config import deep_merge, load_config
from moshi_data.pipeline.storage import write_bytes_atomic


def line_sample_files(config: Mapping[str, Any], line_samples: str | None = None) -> list[str]:
    """Line samples to train the fuzzy model on: given, configured, or produced from the default input."""
    pattern = line_samples or config["fuzzy_dedup"]["samples"]
    if pattern:
        return samples_paths(pattern, config["data_root"])
    return [str(write_default_line_samples(config))]


def ensure_models(
    config: Mapping[str, Any], line_samples: str | None = None, log: Callable[[str], None] = print,
    quality_corpus: LabelCorpus | None = None,
) -> dict[str, Path]:
    """Paths of the fuzzy-dedup and quality models, training those missing from the cache
    (``quality_corpus``: the quality label documents of this run, if already read; it must have been
    read with this very ``config``, since its spec is the quality model's cache key and its data trains it)."""
    if quality_corpus is not None and quality_corpus.config is not config:
        raise ValueError("quality_corpus was read with another config than the one given to ensure_models")
    models_dir(config).mkdir(parents=True, exist_ok=True)
    samples = line_sample_files(config, line_samples)
    paths = {"fuzzy_dedup": fuzzy_model_path(config, samples),
             "quality": quality_model_path(config, quality_corpus.spec if quality_corpus else None)}
    if not paths["fuzzy_dedup"].exists():
        log(f"training fuzzy-dedup model -> {paths['fuzzy_dedup']}")
        info = train_fuzzy(config, samples, paths["fuzzy_dedup"])
        write_bytes_atomic(str(paths["fuzzy_dedup"].with_suffix(".json")),
                           json.dumps({"samples": samples, **info}, indent=2, sort_keys=True).encode("utf-8"))
    if not paths["quality"].exists():
        log(f"training quality model -> {paths['quality']}")
        info = train_quality(config, paths["quality"], (quality_corpus or LabelCorpus(config)).shipped)
        write_bytes_atomic(str(paths["quality"].with_suffix(".json")), json.dumps(info, indent=2, sort_keys=True).encode("utf-8"))
    return paths


def _set_values(section: Mapping[str, Any]) -> dict[str, Any]:
    """The values a text config sets in a section (its nulls mean "from the classifier config")."""
    return {key: _set_values(value) if isinstance(value, Mapping) else value
            for key, value in section.items() if value is not None}


def attach_classifiers(text_config: Mapping[str, Any], log: Callable[[str], None] = print) -> dict[str, Any]:
    """The text job's config with its ``fuzzy_dedup``, ``quality`` and ``minhash`` sections filled from
    the classifier config (``classifiers.config``) and the model paths, training missing models first.

    Values already in the text config's sections win, so ``--set quality.filter.max_rand_score=0.8``
    or ``--set quality.model=gs://bucket/quality.bin`` work from the job's command line. A config
    that already names both models is returned as it is (the call is idempotent)."""
    filled = all(None not in (text_config.get(name) or {None: None}).values() for name in ("fuzzy_dedup", "minhash"))
    if filled and (text_config.get("quality") or {}).get("labels") and (text_config.get("quality") or {}).get("model"):
        return dict(text_config)
    settings = text_config["classifiers"]
    classifier_config = load_config(settings["config"], settings.get("overrides") or [])
    paths = ensure_models(classifier_config, settings.get("line_samples"), log)
    fuzzy, quality = classifier_config["fuzzy_dedup"], classifier_config["quality"]
    sections = {
        "fuzzy_dedup": {"model": str(paths["fuzzy_dedup"]), "threshold": fuzzy["threshold"], "min_run": fuzzy["min_run"]},
        "quality": {"model": str(paths["quality"]), "labels": quality["labels"], "decimals": quality["decimals"],
                    "filter": quality["filter"]},
        "minhash": classifier_config["minhash"],
    }
    config = dict(text_config)
    for name, section in sections.items():
        config[name] = deep_merge(section, _set_values(text_config.get(name) or {}))
    return config
