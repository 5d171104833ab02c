"""The project's one entry point: ``moshi-data <command> [options]`` (also ``python -m moshi_data``).

Each command is the ``main(argv)`` of one module; this file only maps names to modules, so a command's
options live next to the code that uses them. ``moshi-data <command> --help`` lists them.
"""
from __future__ import annotations

import importlib
import sys

# command -> (module whose main(argv) runs it, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "text-corpus": ("moshi_data.beam_jobs.text_corpus", "Helium text job: Common Crawl WET/JSONL -> Parquet"),
    "classifiers": ("moshi_data.classifiers.train", "train the fuzzy-dedup and quality fastText models"),
    "eval-classifiers": ("moshi_data.classifiers.evaluate", "evaluate the text classifiers against their targets"),
    "score-text": ("moshi_data.classifiers.score", "score a JSONL file with the text classifiers"),
    "text-report": ("moshi_data.pipeline.text.report", "rebuild the report of a finished text run"),
    "tokenizer": ("moshi_data.classifiers.tokenizer", "train the SentencePiece text tokenizer"),
    "audio-shards": ("moshi_data.beam_jobs.audio_shards", "Moshi audio job: recordings -> WebDataset shards"),
    "moshi-finetune-export": ("moshi_data.beam_jobs.moshi_finetune_export", "export audio shards for moshi-finetune"),
    "eval-audio": ("moshi_data.pipeline.audio.evaluate", "evaluate diarization, word timing and ASR"),
    "train": ("moshi_data.trainer.train", "train the RQ-Transformer on audio shards (and text)"),
    "inspect": ("moshi_data.pipeline.inspect", "show what is inside a text or audio output (counts, schema, samples)"),
    "show-sample": ("moshi_data.pipeline.audio.show_sample", "draw one audio sample (waveforms, turns, words, text tokens) as a PNG"),
}

PROG = "moshi-data"


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"usage: {PROG} <command> [options]   ({PROG} <command> --help for its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its return value (an int, or None for success) is the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        from moshi_data.pipeline.command import version_line
        print(version_line())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        import difflib
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        print(f"{PROG}: unknown command {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    from moshi_data.pipeline.command import setup_logging

    setup_logging()  # before the import: Beam would install its own root handler
    module = importlib.import_module(COMMANDS[name][0])
    from moshi_data.pipeline.command import exit_status

    return exit_status(module.main(rest))


if __name__ == "__main__":
    sys.exit(main())
