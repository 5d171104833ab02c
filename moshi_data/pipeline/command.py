"""What every ``moshi-data <command>`` shares: option spelling, config resolution, console, exit codes.

A command's ``main(argv)`` builds its parser with :func:`command_parser`, adds its own options and
hands a body ``body(args) -> int | None`` to :func:`run_command`, which

- parses (``beam=True``: options the command does not know must be real Beam pipeline options),
- sets up the console (:func:`setup_logging`): the project's logs at INFO, other libraries at WARNING,
- resolves the config strictly (``args.cfg``; ``--print-config`` prints it and exits),
- runs the body and turns errors into one line on stderr and an exit code (:data:`EXIT_USAGE` for a
  mistake in the command, its inputs or its config, :data:`EXIT_FAILED` when the run did nothing
  useful or missed a target); ``-v``/``--debug`` add the traceback.
"""
from __future__ import annotations

import argparse
import difflib
import functools
import logging
import sys
import traceback
from typing import Any, Callable, Iterable, Sequence

import yaml

from moshi_data.pipeline.config import PACKAGE_ROOT, ConfigError, load_config

PROG = "moshi-data"
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
LOG = logging.getLogger("moshi_data")
# Beam's own chatter in worker processes (harness start/stop lines, internal flags it discards).
# Import-time notices of Beam modules the project does not use.
NOISE = ("apitools not found",)
HARNESS_QUIET = {"__main__": "ERROR", "apache_beam.options.pipeline_options": "ERROR",
                 "apache_beam.runners.worker": "WARNING"}


class UserError(Exception):
    """A mistake in the command, its inputs or its config: reported in one line, exit 2."""


class RunFailed(Exception):
    """The run finished but did nothing useful (nothing read) or missed a target: one line, exit 1."""


# ------------------------------------------------------------------------------------ parsing
def command_name(module: str) -> str:
    """``moshi_data.beam_jobs.text_corpus`` -> ``text-corpus`` (the name in cli.COMMANDS)."""
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        module = spec.name if spec else module
    from moshi_data.cli import COMMANDS

    for name, (target, _) in COMMANDS.items():
        if target == module:
            return name
    return module.rsplit(".", 1)[-1].replace("_", "-")


class CommandParser(argparse.ArgumentParser):
    """argparse with one-line errors (``moshi-data text-corpus: error: ... (--help for usage)``)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (--help for usage)\n")


def command_parser(module: str, description: str | None, *, config: str | None = None, beam: bool = False,
                   resolve: Callable[[argparse.Namespace], dict] | None = None) -> CommandParser:
    """A parser named ``moshi-data <command>`` with the common options.

    ``config``: the command's packaged config (adds ``--config``, ``--set``, ``--print-config``);
    ``beam``: unknown options are passed to Beam when they are Beam pipeline options; ``resolve``:
    how the command resolves its config from the parsed options (default: :func:`load_config`)."""
    epilog = ("Options this command does not define are passed to Beam if they are Beam pipeline options "
              "(e.g. --runner=DataflowRunner, --s3_endpoint_url=...); anything else is an error." if beam else None)
    parser = CommandParser(prog=f"{PROG} {command_name(module)}", description=description, epilog=epilog,
                           formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.set_defaults(_config_name=config, _beam=beam, _resolve=resolve)
    common = parser.add_argument_group("common options")
    if config:
        common.add_argument("--config", default=config, metavar="NAME|YAML",
                            help=f"packaged config name or a YAML file, partial ones merged over {config!r} "
                                 "(default: %(default)s)")
        common.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help="override one config value (YAML syntax), repeatable, e.g. a.b=0.5")
        common.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    common.add_argument("-v", "--verbose", action="count", default=0,
                        help="more output: -v shows other libraries' INFO lines and tracebacks, -vv debug")
    common.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    common.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    common.add_argument("--version", action="version", version=version_line())
    return parser


@functools.cache
def package_version() -> str:
    """``0.1.0`` or, from a git checkout, ``0.1.0 (git 0123456789ab)``; read once per process (the code it
    loaded), so a checkout edited or committed to while the process runs jobs (a test session runs a
    job twice to compare the outputs) does not change the next run's stats.json."""
    from moshi_data import __version__

    commit = git_commit()
    return __version__ + (f" (git {commit})" if commit else "")


def run_provenance(config: dict, inputs: list[str], runner: str) -> dict:
    """The deterministic part of a job's ``run`` block: same input and config, same block
    (``started`` and ``wall_s`` are added to stats.json by the launcher when the run ends)."""
    import hashlib

    digest = hashlib.sha256("\n".join(inputs).encode()).hexdigest()
    return {"config": config, "version": package_version(), "runner": runner,
            "inputs": {"count": len(inputs), "sha256": digest, "first": inputs[0] if inputs else None}}


def version_line() -> str:
    return f"{PROG} {package_version()}"


def git_commit() -> str | None:
    """The checkout's commit (with ``-dirty``) when the package runs from a git checkout, else None."""
    import subprocess

    root = PACKAGE_ROOT.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "") if commit else None


def beam_option_strings() -> dict[str, argparse.Action]:
    """Every option string Beam's PipelineOptions classes define (as Beam collects them)."""
    from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser

    parser = _BeamArgumentParser(allow_abbrev=False)
    classes: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():
        classes.setdefault(str(cls), cls)
    for cls in classes.values():
        cls._add_argparse_args(parser)  # noqa: SLF001 - the way Beam itself builds its parser
    return {s: a for s, a in parser._option_string_actions.items() if s.startswith("--")}  # noqa: SLF001


def check_beam_args(parser: argparse.ArgumentParser, extra: Sequence[str]) -> list[str]:
    """``extra`` unchanged if every option in it is a Beam pipeline option, else a usage error."""
    known = beam_option_strings()
    for arg in extra:
        if not arg.startswith("-"):
            continue
        flag = arg.split("=", 1)[0]
        if flag not in known:
            ours = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]  # noqa: SLF001
            close = difflib.get_close_matches(flag, [*ours, *known], n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]}?" if close else ""
            parser.error(f"unknown option {flag} (neither an option of this command nor a Beam pipeline option{hint})")
    for i, arg in enumerate(extra):
        previous = extra[i - 1] if i else ""
        is_value = previous.startswith("--") and "=" not in previous and known[previous].nargs != 0
        if not arg.startswith("-") and not is_value:
            parser.error(f"unexpected argument {arg!r} (a glob the shell expanded? quote it: --input 'dir/*.jsonl')")
    return list(extra)


def harness_args(beam_args: Sequence[str], verbosity: int) -> list[str]:
    """Log levels for Beam's worker harness (WARNING unless -v), unless the command line sets them."""
    args = []
    if not any(a.startswith("--default_sdk_harness_log_level") for a in beam_args):
        args.append(f"--default_sdk_harness_log_level={'INFO' if verbosity else 'WARNING'}")
    if not verbosity and not any(a.startswith("--sdk_harness_log_level_overrides") for a in beam_args):
        import json

        args.append(f"--sdk_harness_log_level_overrides={json.dumps(HARNESS_QUIET)}")
    return args


# ------------------------------------------------------------------------------------ console
class _LevelByOrigin(logging.Filter):
    """Records from this package pass at ``project`` level, every other library's at ``others``."""

    def __init__(self, project: int, others: int):
        super().__init__()
        self.project, self.others = project, others
        self.package = str(PACKAGE_ROOT)
        self.bench = str(PACKAGE_ROOT.parent / "bench")

    def filter(self, record: logging.LogRecord) -> bool:
        ours = record.pathname.startswith((self.package, self.bench)) or record.name.startswith("moshi_data")
        if record.name.startswith("apache_beam.runners.portability.local_job_service") and str(record.msg).startswith("Worker:"):
            return False  # worker log lines forwarded a second time (the workers print them already)
        if not ours and self.others > logging.INFO and str(record.msg).startswith(NOISE):
            return False
        return record.levelno >= (self.project if ours else self.others)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prefix = "" if record.levelno == logging.INFO else f"{record.levelname.lower()}: "
        return prefix + text


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (pytest and tqdm swap it)."""

    def __init__(self):
        super().__init__(sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


_HANDLER: logging.Handler | None = None


def setup_logging(verbosity: int = 0, quiet: bool = False, debug: bool = False) -> None:
    """Replace whatever root handler an import installed (Beam installs one) by the project's console.

    Default: the project's INFO lines, other libraries' warnings. ``-q``: warnings only.
    ``-v``: every library at INFO. ``-vv``/``--debug``: DEBUG everywhere."""
    global _HANDLER
    if debug or verbosity >= 2:
        project = others = logging.DEBUG
    elif verbosity == 1:
        project = others = logging.INFO
    elif quiet:
        project = others = logging.WARNING
    else:
        project, others = logging.INFO, logging.WARNING
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    _HANDLER = _StderrHandler()
    _HANDLER.setFormatter(_Formatter("%(message)s"))
    _HANDLER.addFilter(_LevelByOrigin(project, others))
    root.addHandler(_HANDLER)
    root.setLevel(min(project, others))
    logging.captureWarnings(True)


def table(rows: Iterable[Sequence[Any]], header: Sequence[str] | None = None, indent: int = 2) -> str:
    """An aligned text table; numbers right-aligned, floats with up to 3 decimals."""
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.3f}".rstrip("0").rstrip(".") if value != int(value) else f"{int(value):,}"
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{value:,}"
        return "" if value is None else str(value)

    rows = [list(r) for r in rows]
    texts = [[cell(v) for v in r] for r in ([list(header)] if header else []) + rows]
    if not texts:
        return ""
    widths = [max(len(r[i]) for r in texts if i < len(r)) for i in range(max(len(r) for r in texts))]
    numeric = [all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool) for r in rows if i < len(r))
               for i in range(len(widths))]
    lines = []
    for n, r in enumerate(texts):
        parts = [t.rjust(widths[i]) if numeric[i] and not (header and n == 0) else t.ljust(widths[i])
                 for i, t in enumerate(r)]
        lines.append(" " * indent + "  ".join(parts).rstrip())
        if header and n == 0:
            lines.append(" " * indent + "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def breakdown(counts: dict[str, int] | int) -> str:
    """``{"language": 391, "empty": 27}`` -> ``"language 391, empty 27"`` (largest first)."""
    if not isinstance(counts, dict):
        return ""
    return ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if v)


# ------------------------------------------------------------------------------------ running
def run_command(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
                body: Callable[[argparse.Namespace], Any]) -> Any:
    """Parse ``argv``, set up the console, resolve the config and run ``body``.

    Returns the exit code on error; else what ``body`` returned (None -> 0; a command may return its
    result for callers in Python, ``moshi-data`` then exits 0)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--print-config" in argv:  # the config alone: options the run needs are not required
        for action in parser._actions:  # noqa: SLF001
            action.required = False
    if parser.get_default("_beam"):
        args, extra = parser.parse_known_args(argv)
        args.beam_args = check_beam_args(parser, extra)
        args.beam_args += harness_args(args.beam_args, args.verbose + 2 * args.debug)
    else:
        args = parser.parse_args(argv)
        args.beam_args = []
    setup_logging(args.verbose, args.quiet, args.debug)
    show_traceback = args.debug or args.verbose > 0
    try:
        config_name = parser.get_default("_config_name")
        resolve = parser.get_default("_resolve")
        if not config_name:
            args.cfg = None
        else:
            args.cfg = resolve(args) if resolve else load_config(args.config, args.set, defaults=config_name)
        if config_name and args.print_config:
            sys.stdout.write(yaml.safe_dump(args.cfg, sort_keys=False, allow_unicode=True, width=100))
            return EXIT_OK
        result = body(args)
        return EXIT_OK if result is None else result
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - every error ends as one line + an exit code
        code = exit_code(error)
        if show_traceback:
            traceback.print_exc()
        hint = "" if show_traceback or code != EXIT_FAILED or isinstance(error, RunFailed) else " (--debug for the traceback)"
        print(f"{parser.prog}: error: {describe(error)}{hint}", file=sys.stderr)
        return code


def exit_status(result: Any) -> int:
    """The process exit status for what a command's ``main`` returned (an int, or a result = success)."""
    return result if isinstance(result, int) and not isinstance(result, bool) else EXIT_OK


def exit_code(error: BaseException) -> int:
    if isinstance(error, (UserError, ConfigError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
                          PermissionError, yaml.YAMLError)):
        return EXIT_USAGE
    return EXIT_FAILED


def describe(error: BaseException) -> str:
    """One line: the message of a user error, ``Type: message`` of anything else."""
    if isinstance(error, (UserError, ConfigError, RunFailed)):
        message = str(error)
    elif isinstance(error, FileNotFoundError):
        message = f"no such file or folder: {error.filename}" if error.filename else str(error)
    else:
        message = f"{type(error).__name__}: {error}"
    for cause in (error.__cause__, error.__context__):
        # Beam wraps errors raised in a DoFn; name the original one.
        if cause is not None and not isinstance(error, (UserError, ConfigError, RunFailed)):
            message = f"{type(cause).__name__}: {cause}"
            break
    lines = [line for line in message.strip().splitlines() if line.strip()]
    if lines and lines[0].split(": ")[-1].startswith("Traceback"):
        lines = lines[-1:]  # a worker's traceback as text: its last line names the error
    first = lines[0].strip() if lines else type(error).__name__
    return first if len(first) <= 500 else first[:497] + "..."


def rejects_summary(rejects: Sequence[str], total: int, where: str, shown: int = 5) -> list[str]:
    """The first ``shown`` rejects, one line each, then the count and the file holding them all."""
    lines = list(rejects[:shown])
    if total > len(lines):
        lines.append(f"... {total - len(lines):,} more")
    if total:
        lines.append(f"{total:,} rejected in all: {where}")
    return lines
