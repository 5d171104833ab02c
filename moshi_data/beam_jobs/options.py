"""Beam pipeline options for the jobs: local DirectRunner defaults, Dataflow flags and packaging,
and what a job must do before workers that do not share the launcher's disk start (model staging)."""
from __future__ import annotations

import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from apache_beam.options.pipeline_options import GoogleCloudOptions, PipelineOptions, StandardOptions

from moshi_data.pipeline import models, storage
from moshi_data.pipeline.command import UserError
from moshi_data.pipeline.config import REPO_ROOT, load_config

DISTRIBUTION = "moshi-data"
# Runners whose workers run on the launcher's machine and see its disk; every other runner
# (PortableRunner, DataflowRunner, Flink, Spark, Prism) gets staged models.
LOCAL_RUNNERS = ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")

DATAFLOW_KEYS = ("project", "region", "temp_location", "staging_location", "job_name", "machine_type",
                 "max_num_workers", "disk_size_gb", "number_of_worker_harness_threads")
# Repeatable Dataflow flags: one --flag=value per list item.
DATAFLOW_LIST_KEYS = ("experiments", "dataflow_service_options")


def _given(beam_args: list[str], flag: str) -> bool:
    return any(arg == f"--{flag}" or arg.startswith(f"--{flag}=") for arg in beam_args)


def runner_name(beam_args: list[str], runner_cfg: dict) -> str:
    for i, arg in enumerate(beam_args):
        if arg.startswith("--runner="):
            return arg.split("=", 1)[1]
        if arg == "--runner" and i + 1 < len(beam_args):
            return beam_args[i + 1]
    return runner_cfg["runner"]


class RemoteRunnerError(ValueError):
    """A remote-runner setting that cannot work (one-line message naming the flag to fix)."""


def requirement_lines(extra: str) -> list[str]:
    """The installed distribution's base requirements plus those of ``extra`` (markers dropped)."""
    from packaging.requirements import Requirement

    lines = []
    for line in importlib.metadata.requires(DISTRIBUTION) or []:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or marker.evaluate({"extra": extra}):
            requirement.marker = None
            lines.append(str(requirement))
    return lines


def requirements_file(extra: str, folder: str | None = None) -> str:
    """Write the pinned requirements of an extra to a file (for ``--requirements_file``)."""
    path = Path(folder or tempfile.mkdtemp(prefix="beam-reqs-")) / f"requirements-{extra}.txt"
    path.write_text("\n".join(requirement_lines(extra)) + "\n", encoding="utf-8")
    return str(path)


def dataflow_args(beam_args: list[str], dataflow_cfg: dict) -> list[str]:
    """Flags from configs/dataflow.yaml that the command line did not already set."""
    args = [f"--{key}={dataflow_cfg[key]}" for key in DATAFLOW_KEYS
            if dataflow_cfg.get(key) is not None and not _given(beam_args, key)]
    for key in DATAFLOW_LIST_KEYS:
        args += [f"--{key}={value}" for value in dataflow_cfg.get(key) or []]
    image = dataflow_cfg.get("sdk_container_image")
    if image and not _given(beam_args, "sdk_container_image"):
        args.append(f"--sdk_container_image={image}")
    elif not image and not _given(beam_args, "sdk_container_image"):
        if not _given(beam_args, "setup_file"):
            setup_file = REPO_ROOT / dataflow_cfg["setup_file"]
            if not setup_file.is_file():
                raise RemoteRunnerError(f"no {setup_file} (moshi-data is installed from a wheel): give "
                                        "--sdk_container_image=IMAGE (docs/dataflow.md) or set it in dataflow.yaml")
            args.append(f"--setup_file={setup_file}")
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


def with_dataflow(beam_args: list[str], dataflow_config: str) -> tuple[list[str], list[str]]:
    """``beam_args`` plus the Dataflow settings of ``dataflow_config`` when the last ``--runner``
    given is DataflowRunner, and that file's job-config overrides; unchanged otherwise."""
    runners = [arg.split("=", 1)[1] for arg in beam_args if arg.startswith("--runner=")]
    if not runners or runners[-1] != "DataflowRunner":
        return list(beam_args), []
    dataflow_cfg = load_config(dataflow_config)
    return [*beam_args, *dataflow_args(beam_args, dataflow_cfg)], list(dataflow_cfg.get("job_overrides") or [])


def build_pipeline_options(beam_args: list[str], runner_cfg: dict,
                           dataflow_config: str = "dataflow") -> tuple[PipelineOptions, list[str]]:
    """Pipeline options and extra job-config overrides (Dataflow runs use production models)."""
    runner = runner_name(beam_args, runner_cfg)
    if runner == "DataflowRunner":
        args, overrides = with_dataflow([*beam_args, "--runner=DataflowRunner"], dataflow_config)
    elif runner in ("DirectRunner", "FnApiRunner", "BundleBasedDirectRunner"):
        args = [*beam_args, *local_args(beam_args, runner_cfg)]
        overrides = []
    else:
        args, overrides = list(beam_args), []
    return PipelineOptions(args), overrides


def is_remote(options: PipelineOptions) -> bool:
    """True when the runner's workers may not see the launcher's disk."""
    runner = options.view_as(StandardOptions).runner or "DirectRunner"
    return (runner if isinstance(runner, str) else type(runner).__name__) not in LOCAL_RUNNERS


def staging_root(options: PipelineOptions) -> str:
    """``--temp_location`` (else ``--staging_location``): the object-store folder models are staged in."""
    cloud = options.view_as(GoogleCloudOptions)
    root = cloud.temp_location or cloud.staging_location
    runner = options.view_as(StandardOptions).runner
    if not root:
        raise RemoteRunnerError(f"--runner={runner} runs workers that do not see this machine's disk: give "
                                "--temp_location=s3://BUCKET/tmp or gs://BUCKET/tmp (models are staged there)")
    if storage.is_local(root):
        raise RemoteRunnerError(f"--temp_location={root} is a local folder, which {runner} workers cannot read: "
                                "use an s3:// or gs:// folder")
    return root


def check_paths_reach_workers(options: PipelineOptions, inputs: Iterable[str], output: str,
                              others: Mapping[str, str | None] | None = None) -> None:
    """On a remote runner, inputs, output and ``others`` (name -> path) must be in object storage: workers
    cannot see this machine's disk (one line, before any worker starts)."""
    if not is_remote(options):
        return
    local = [path for path in inputs if storage.is_local(path)]
    local_others = [(name, path) for name, path in (others or {}).items() if path and storage.is_local(path)]
    if local:
        where = f"input {local[0]}" + (f" (and {len(local) - 1} more)" if len(local) > 1 else "")
    elif storage.is_local(output):
        where = f"output {output}"
    elif local_others:
        where = "{} {}".format(*local_others[0])
    else:
        return
    raise UserError(f"{where} is on this machine, which remote workers cannot read: use s3:// or gs:// paths")


def check_reachable(folder: str, what: str) -> None:
    """One-line error when the object store holding ``folder`` cannot be reached or refuses us."""
    if storage.is_local(folder) or folder.startswith(storage.HTTP_SCHEMES):
        return
    try:
        storage.probe(folder)
    except Exception as exc:  # noqa: BLE001 - any store failure becomes one line
        first = (str(exc).splitlines() or [""])[0][:200]
        raise RemoteRunnerError(f"{what} {folder}: object store not reachable ({type(exc).__name__}: {first}); "
                                "check the endpoint/credentials options (--s3_endpoint_url, ...)") from exc


def prepare_workers(options: PipelineOptions, config: Mapping[str, Any], model_keys: Iterable[str], output: str,
                    log: Callable[[str], None] = print) -> dict:
    """Checks before any worker starts, and the job config the workers get.

    The output's object store must answer, and every model URL in the config must exist. On a
    runner other than the local ones, every model the config names on the launcher's disk (or in an
    installed package) is uploaded once, content-addressed, to
    ``<temp_location>/moshi-data/models/<sha256>-<name>`` and the config names that URL instead."""
    model_keys = list(model_keys)
    check_reachable(output, "--output")
    if not is_remote(options):
        models.check_model_urls(config, model_keys)
        return dict(config)
    root = staging_root(options)
    check_reachable(root, "--temp_location")
    return models.stage_models(config, model_keys, root, REPO_ROOT, log=log)
