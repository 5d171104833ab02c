"""Beam pipeline options for the jobs: local DirectRunner defaults, Dataflow flags and packaging."""
from __future__ import annotations

import os
import tempfile
import tomllib
from pathlib import Path

from apache_beam.options.pipeline_options import PipelineOptions

from moshi_data.pipeline.config import REPO_ROOT, load_config

DATAFLOW_KEYS = ("project", "region", "temp_location", "staging_location", "job_name", "machine_type",
                 "max_num_workers")


def _given(beam_args: list[str], flag: str) -> bool:
    return any(arg == f"--{flag}" or arg.startswith(f"--{flag}=") for arg in beam_args)


def runner_name(beam_args: list[str], runner_cfg: dict) -> str:
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return runner_cfg["runner"]


def requirements_file(extra: str, folder: str | None = None) -> str:
    """Write the pinned requirements of a pyproject extra to a file (for ``--requirements_file``)."""
    with open(REPO_ROOT / "pyproject.toml", "rb") as handle:
        project = tomllib.load(handle)["project"]
    lines = [*project["dependencies"], *project["optional-dependencies"][extra]]
    path = Path(folder or tempfile.mkdtemp(prefix="beam-reqs-")) / f"requirements-{extra}.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def dataflow_args(beam_args: list[str], dataflow_cfg: dict) -> list[str]:
    """Flags from configs/dataflow.yaml that the command line did not already set."""
    args = [f"--{key}={dataflow_cfg[key]}" for key in DATAFLOW_KEYS
            if dataflow_cfg.get(key) is not None and not _given(beam_args, key)]
    for experiment in dataflow_cfg.get("experiments") or []:
        args.append(f"--experiments={experiment}")
    image = dataflow_cfg.get("sdk_container_image")
    if image and not _given(beam_args, "sdk_container_image"):
        args.append(f"--sdk_container_image={image}")
    elif not image and not _given(beam_args, "sdk_container_image"):
        if not _given(beam_args, "setup_file"):
            args.append(f"--setup_file={REPO_ROOT / dataflow_cfg['setup_file']}")
        if not _given(beam_args, "requirements_file") and dataflow_cfg.get("requirements_extra"):
            args.append(f"--requirements_file={requirements_file(dataflow_cfg['requirements_extra'])}")
    return args


def local_args(beam_args: list[str], runner_cfg: dict) -> list[str]:
    """DirectRunner defaults from the job config (one worker per core unless told otherwise)."""
    args = [] if _given(beam_args, "runner") else [f"--runner={runner_cfg['runner']}"]
    if not _given(beam_args, "direct_running_mode"):
        args.append(f"--direct_running_mode={runner_cfg['direct_running_mode']}")
    if not _given(beam_args, "direct_num_workers"):
        workers = int(runner_cfg["direct_num_workers"]) or os.cpu_count() or 1
        args.append(f"--direct_num_workers={workers}")
    return args


def build_pipeline_options(beam_args: list[str], runner_cfg: dict,
                           dataflow_config: str = "dataflow") -> tuple[PipelineOptions, list[str]]:
    """Pipeline options and extra job-config overrides (Dataflow runs use production models)."""
    runner = runner_name(beam_args, runner_cfg)
    if runner == "DataflowRunner":
        dataflow_cfg = load_config(dataflow_config)
        args = [*beam_args, *dataflow_args(beam_args, dataflow_cfg)]
        overrides = list(dataflow_cfg.get("job_overrides") or [])
    elif runner in ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner"):
        args = [*beam_args, *local_args(beam_args, runner_cfg)]
        overrides = []
    else:
        args, overrides = list(beam_args), []
    return PipelineOptions(args), overrides
