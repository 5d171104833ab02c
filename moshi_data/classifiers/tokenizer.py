"""Train the offline default text tokenizer (`make tokenizer`): a Helium-like SentencePiece model.

Helium's tokenizer is a SentencePiece unigram model with digits split one by one and byte fallback
(``../shared/notes/helium-moshi-recipe.md`` section 1). Normalization is NFKC without SentencePiece's
default whitespace folding (``nmt_nfkc``), so "\\n" encodes to its byte-fallback piece ``<0x0A>`` as
moshi-finetune's ``tokenize`` expects (``encode("\\n")[-1]``). Without its 32k model offline, we train the
same kind of model, smaller, from ``../shared/data/reference_text``. Ids 0-3 are unk, bos, eos, pad
so that moshi's EPAD = 0 and PAD = 3 keep their meaning. The model is cached under ``models/`` next
to a settings stamp; it is retrained only when the settings change (or with ``--force``).
"""
from __future__ import annotations

import gzip
import html
import io
import json
import os
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator, Mapping

from moshi_data.pipeline.config import REPO_ROOT, apply_overrides

_TAG = re.compile(r"<[^>]+>")
_TEXT_SUFFIXES = (".txt", ".rst", ".tex", ".md")
_SPM_KEYS = (
    "vocab_size", "model_type", "split_digits", "byte_fallback", "character_coverage", "max_sentence_length",
    "input_sentence_size", "seed_sentencepiece_size", "unk_id", "bos_id", "eos_id", "pad_id", "num_threads",
    "normalization_rule_name",
)


def _resolve(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def _strip_markup(text: str) -> str:
    return html.unescape(_TAG.sub(" ", html.unescape(text)))


def _json_texts(line: str) -> Iterator[str]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return
    if isinstance(record, dict):
        for key in ("text", "title", "abstract", "body"):
            if isinstance(record.get(key), str):
                yield record[key]


def _texts_of_file(path: Path) -> Iterator[str]:
    name = path.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            for member in sorted(archive.namelist()):
                if not member.endswith("/") and not member.rsplit("/", 1)[-1].startswith("."):
                    yield archive.read(member).decode("utf-8", "replace")
    elif name.endswith(".jsonl.gz") or name.endswith(".jsonl"):
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                yield from _json_texts(line)
    elif name.endswith(".xml"):
        yield _strip_markup(path.read_text(encoding="utf-8", errors="replace"))
    elif name.endswith(_TEXT_SUFFIXES):
        yield path.read_text(encoding="utf-8", errors="replace")


def reference_lines(root: Path, exclude: list[str], min_chars: int) -> Iterator[str]:
    """Lines of every readable file under ``root`` (sorted paths), skipping ``exclude`` top folders."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        relative = path.relative_to(root)
        if relative.parts[0] in exclude or path.name == "SOURCES.txt":
            continue
        for text in _texts_of_file(path):
            for line in text.splitlines():
                line = " ".join(line.split())
                if len(line) >= min_chars:
                    yield line


def tokenizer_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The settings that define the trained model (written as its stamp)."""
    section = config["tokenizer"]
    settings = {key: section[key] for key in _SPM_KEYS}
    settings.update({"input": section["input"], "exclude": list(section["exclude"]), "min_line_chars": section["min_line_chars"]})
    return settings


def model_path(config: Mapping[str, Any]) -> Path:
    """Where the trained model lives (``<output prefix>.model``)."""
    return _resolve(config["tokenizer"]["output"] + ".model")


def train_tokenizer(config: Mapping[str, Any], force: bool = False) -> Path:
    """Train (or reuse the cached) SentencePiece model; returns the ``.model`` path."""
    import sentencepiece

    section = config["tokenizer"]
    prefix = _resolve(section["output"])
    stamp = prefix.with_suffix(".json")
    settings = tokenizer_settings(config)
    target = prefix.with_suffix(".model")
    if not force and target.exists() and stamp.exists() and json.loads(stamp.read_text()) == settings:
        return target
    source = _resolve(section["input"])
    if not source.is_dir():
        raise FileNotFoundError(f"tokenizer.input {source} is not a folder (../shared/data/reference_text expected)")
    lines = list(reference_lines(source, list(section["exclude"]), int(section["min_line_chars"])))
    if not lines:
        raise ValueError(f"no text lines found under {source}")
    model = io.BytesIO()  # trained from an iterator into memory: no temporary path lands in the model
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, shuffle_input_sentence=False, minloglevel=2,
        **{key: section[key] for key in _SPM_KEYS},
    )
    processor = sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = "".join(f"{processor.id_to_piece(i)}\t{processor.get_score(i):g}\n" for i in range(processor.get_piece_size()))
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for suffix, payload in ((".model", model.getvalue()), (".vocab", vocab.encode("utf-8"))):
        tmp = prefix.with_suffix(suffix + ".tmp")
        tmp.write_bytes(payload)
        os.replace(tmp, prefix.with_suffix(suffix))
    tmp_stamp = stamp.with_suffix(".json.tmp")
    tmp_stamp.write_text(json.dumps(settings, indent=1, sort_keys=True))
    os.replace(tmp_stamp, stamp)
    return target


def main(argv: list[str] | None = None) -> int:
    from moshi_data.pipeline.command import command_parser, run_command

    parser = command_parser(__name__, "Train the offline SentencePiece tokenizer from reference text "
                                      "(config section 'tokenizer').", config="audio_shards")
    parser.add_argument("--output", help="output prefix (writes PREFIX.model, PREFIX.vocab, PREFIX.json)")
    parser.add_argument("--force", action="store_true", help="retrain even if the cached model matches")
    return run_command(parser, argv, _main)


def _main(args) -> None:
    config = apply_overrides(args.cfg, [f"tokenizer.output={args.output}"] if args.output else [])
    path = train_tokenizer(config, force=args.force)
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor(model_file=str(path))
    sample = "In 1990 we paid $23.50 for it."
    print(f"tokenizer: {path} ({processor.get_piece_size()} pieces)")
    print(f"  {sample!r} -> {processor.encode(sample, out_type=str)}")


if __name__ == "__main__":
    raise SystemExit(main())
