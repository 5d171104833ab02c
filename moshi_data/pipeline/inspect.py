"""``moshi-data inspect INPUT``: what is inside a text or audio output, without writing code.

INPUT is a text output folder or Parquet file (counts per reason, schema, sample documents with their
scores, language and line counts; ``--where 'quality.wiki>0.5'``, ``--reason too_short``), or an audio
output folder, shards/ folder or shard .tar (one row per sample). ``--json`` prints the same as JSON.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from moshi_data.pipeline.audio import inspect as audio_inspect
from moshi_data.pipeline.text import inspect as text_inspect


def run(path: str, where: list[str], reason: str | None, limit: int | None, as_json: bool) -> str:
    """The page (or JSON) ``inspect`` prints for ``path``."""
    target = Path(path)
    if not target.exists():
        raise text_inspect.InspectError(f"{path}: no such file or folder")
    if text_inspect.is_text_output(target):
        result = text_inspect.inspect_text(target, where, reason, 5 if limit is None else limit)
        return json.dumps(result, indent=1, default=str) if as_json else text_inspect.format_text(result)
    if audio_inspect.is_audio_output(target) or (target / audio_inspect.STATS_FILE).exists():
        if where or reason:
            raise text_inspect.InspectError("--where and --reason apply to text outputs only")
        result = audio_inspect.inspect_audio(target, limit)
        return json.dumps(result, indent=1, default=str) if as_json else audio_inspect.format_audio(result)
    raise text_inspect.InspectError(f"{path}: neither a text output (documents/*.parquet) nor audio shards (shards/*.tar)")


def main(argv: list[str] | None = None) -> int:
    from moshi_data.pipeline.command import command_parser, run_command

    parser = command_parser(__name__, __doc__)
    parser.add_argument("input", help="text output folder | Parquet file | audio output folder | shard .tar")
    parser.add_argument("--where", action="append", default=[], metavar="COND",
                        help="text: keep documents where COND holds, e.g. 'quality.wiki>0.5', 'language==en' (repeatable, ANDed)")
    parser.add_argument("--reason", help="text: sample the documents of this outcome (kept, a filter or reject reason)")
    parser.add_argument("--limit", type=int, help="documents (text, default 5) or rows (audio, default all) to show")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a page")
    return run_command(parser, argv, _main)


def _main(args) -> None:
    from moshi_data.pipeline.command import UserError

    try:
        print(run(args.input, args.where, args.reason, args.limit, args.json))
    except (text_inspect.InspectError, audio_inspect.InspectError) as error:
        raise UserError(str(error)) from error


if __name__ == "__main__":
    sys.exit(main())
