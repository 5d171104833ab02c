"""Score any JSONL file with a ``text`` field (``make score-text INPUT=in.jsonl OUTPUT=out.jsonl``):
writes the same records with a ``scores`` object (all 9 quality labels, the text job's aggregation)
and ``fuzzy_dup_lines`` (lines the fuzzy-dedup stage would remove). Trains the models if missing.
Records that are not JSON objects with a string ``text`` are written to ``OUTPUT.rejects.jsonl``."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from tqdm import tqdm

from moshi_data.classifiers.models import ensure_models
from moshi_data.classifiers.sources import read_bytes
from moshi_data.pipeline.command import exit_status, RunFailed, command_parser, run_command
from moshi_data.pipeline.text.fuzzy_dedup import FuzzyDedupStage
from moshi_data.pipeline.text.quality import QualityScorer


def main(argv=None) -> dict[str, int] | int:
    parser = command_parser(__name__, __doc__, config="classifiers")
    parser.add_argument("--input", required=True, help="JSONL (optionally .gz; local or s3://...) with a text field")
    parser.add_argument("--output", required=True, help="JSONL written atomically")
    return run_command(parser, argv, _main)


def _atomic_writer(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    return os.fdopen(handle, "w", encoding="utf-8"), tmp


def _main(args) -> dict[str, int]:
    config = args.cfg
    paths = ensure_models(config)
    quality = config["quality"]
    scorer = QualityScorer(str(paths["quality"]), quality["labels"], quality["decimals"])
    fuzzy = FuzzyDedupStage({"model": str(paths["fuzzy_dedup"]), **config["fuzzy_dedup"]})
    scorer.setup()
    fuzzy.setup()
    output, rejects_path = Path(args.output), Path(f"{args.output}.rejects.jsonl")
    out, out_tmp = _atomic_writer(output)
    rejects, rejects_tmp = _atomic_writer(rejects_path)
    counts = {"in": 0, "scored": 0, "rejected": 0}
    with out, rejects:
        for number, line in enumerate(tqdm(read_bytes(args.input).split(b"\n"), desc="score", unit="rec"), 1):
            if not line.strip():
                continue
            counts["in"] += 1
            try:  # a line that is not UTF-8 (UnicodeDecodeError is a ValueError) is one reject, not the end
                record = json.loads(line.decode("utf-8"))
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError("record is not a JSON object with a string 'text' field")
            except ValueError as error:
                counts["rejected"] += 1
                rejects.write(json.dumps({"line": number, "reason": "bad_record", "message": str(error)}) + "\n")
                continue
            record["scores"] = scorer.scores(record["text"])
            record["fuzzy_dup_lines"] = sum(fuzzy.removed_line_mask(record["text"].split("\n")))
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            counts["scored"] += 1
    os.replace(out_tmp, output)
    os.replace(rejects_tmp, rejects_path)
    print(json.dumps({**counts, "output": str(output), "rejects": str(rejects_path)}))
    if not counts["scored"]:
        raise RunFailed(f"no record of {args.input} could be scored ({counts['rejected']} rejected, see {rejects_path})")
    return counts


if __name__ == "__main__":
    raise SystemExit(exit_status(main()))
