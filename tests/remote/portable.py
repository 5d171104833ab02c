"""Beam's portable stack as Dataflow Runner v2 uses it, on this machine: a job service plus an
external worker pool started in its own mount namespace, where the launcher's files are hidden.

The workers import moshi_data from a wheel built from this checkout and installed with
``pip install --no-deps --target`` (other packages from the launcher's venv). Empty tmpfs mounts
cover the repository's ``models/`` and package folder, ``../shared``, HOME (the interpreter's own
prefix is bound back when it lives there) and the model cache, so a worker that opens a
launcher-side path fails.
"""
from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

from moshi_data.pipeline.models import DEFAULT_CACHE

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_FILES = ("moshi_data", "pyproject.toml", "setup.py", "README.md")


def unshare_available() -> str | None:
    """None when ``unshare --mount`` can mount a tmpfs here, else why not."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount -t tmpfs tmpfs /mnt"], capture_output=True, text=True)
    return None if probe.returncode == 0 else f"unshare --mount is not permitted here: {probe.stderr.strip()[:200]}"


def build_worker_site(folder: Path) -> Path:
    """Build the wheel from a clean copy of the package sources and install it, without
    dependencies, into ``folder/site``; returns that folder."""
    source = folder / "source"
    source.mkdir()
    for name in PACKAGE_FILES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy(path, source / name)
    wheels = folder / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # The venv's setuptools builds it when new enough for pyproject's PEP 639 license (>= 77), else pip
    # builds in isolation with setuptools from the package index.
    import setuptools

    isolation = ["--no-build-isolation"] if int(setuptools.__version__.split(".")[0]) >= 77 else []
    subprocess.run([*pip, "wheel", "--no-deps", *isolation, "-w", str(wheels), str(source)], check=True,
                   capture_output=True)
    [wheel] = wheels.glob("moshi_data-*.whl")
    site = folder / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    return site


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}: {log.read_text()[-2000:]}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"port {port} not open after {timeout_s} s: {log.read_text()[-2000:]}")


def hidden_paths() -> list[Path]:
    """Launcher-side folders the workers must not see."""
    import moshi_data

    home = Path.home()
    paths = [REPO_ROOT / "models", (REPO_ROOT.parent / "shared").resolve(), home, DEFAULT_CACHE,
             REPO_ROOT / "moshi_data", Path(moshi_data.__file__).resolve().parent]
    for finder in Path(sysconfig.get_paths()["purelib"]).glob("__editable___moshi_data_*_finder.py"):
        for line in finder.read_text().splitlines():
            if line.startswith("MAPPING"):  # the package folder an editable install points at
                paths.append(Path(line.split("'")[3]))
    kept: list[Path] = []
    for path in sorted({p for p in paths if p.exists()}):  # parents first; nested paths are covered
        if not any(path.is_relative_to(parent) for parent in kept):
            kept.append(path)
    return kept


class PortableStack:
    """Job service (launcher side) + external worker pool (isolated); ``beam_args`` point a job at them."""

    def __init__(self, folder: Path, site: Path, env: dict[str, str]):
        self.folder, self.site = folder, site
        self.job_port, self.pool_port = free_port(), free_port()
        self.hidden = hidden_paths()
        python = sys.executable
        venv_site = sysconfig.get_paths()["purelib"]
        stash = folder / "python-prefix"
        stash.mkdir()
        worker_tmp = folder / "worker-tmp"
        worker_tmp.mkdir()
        steps = ["set -e", f"mount --bind {shlex.quote(sys.base_prefix)} {shlex.quote(str(stash))}"]
        for path in self.hidden:
            steps.append(f"mount -t tmpfs tmpfs {shlex.quote(str(path))}")
        if any(Path(sys.base_prefix).is_relative_to(path) for path in self.hidden):  # e.g. pyenv under HOME
            steps += [f"mkdir -p {shlex.quote(sys.base_prefix)}",
                      f"mount --bind {shlex.quote(str(stash))} {shlex.quote(sys.base_prefix)}"]
        steps += [f"cd {shlex.quote(str(worker_tmp))}",
                  f"exec {shlex.quote(python)} -m apache_beam.runners.worker.worker_pool_main --service_port={self.pool_port}"]
        worker_env = {**env, "PYTHONPATH": f"{site}:{venv_site}", "TMPDIR": str(worker_tmp), "HOME": str(Path.home()),
                      "PATH": f"{Path(python).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                      "PYANNOTE_METRICS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
        worker_env.pop("MOSHI_DATA_MODEL_CACHE", None)
        self.pool_log, self.job_log = folder / "worker-pool.log", folder / "job-service.log"
        self.pool = subprocess.Popen(["unshare", "--mount", "sh", "-c", "; ".join(steps)], env=worker_env,
                                     stdout=open(self.pool_log, "wb"), stderr=subprocess.STDOUT, cwd=worker_tmp)
        self.job = subprocess.Popen([python, "-m", "apache_beam.runners.portability.local_job_service_main",
                                     f"--port={self.job_port}"], env={**os.environ, **env},
                                    stdout=open(self.job_log, "wb"), stderr=subprocess.STDOUT, cwd=folder)
        try:
            wait_for_port(self.pool_port, self.pool, self.pool_log)
            wait_for_port(self.job_port, self.job, self.job_log)
        except Exception:
            self.stop()
            raise

    @property
    def beam_args(self) -> list[str]:
        return ["--runner=PortableRunner", f"--job_endpoint=localhost:{self.job_port}", "--environment_type=EXTERNAL",
                f"--environment_config=localhost:{self.pool_port}", "--sdk_location=container"]

    def stop(self) -> None:
        for process in (self.job, self.pool):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
