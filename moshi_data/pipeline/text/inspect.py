"""Look inside a text-job output: counts per reason, the Parquet schema, sample documents.

Pure functions over the files a run wrote (``documents/*.parquet``, ``stats.json``,
``rejects/rejects-<file>.jsonl``, ``examples/dropped.jsonl``); ``moshi-data inspect`` prints what they return.
Conditions such as ``quality.wiki>0.5`` become one pyarrow filter, so counting the matching documents
streams over the shards instead of loading them.
"""
from __future__ import annotations

import json
import operator
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

DOCUMENTS_DIR = "documents"
STATS_FILE = "stats.json"
REJECTS_FILE = "rejects/*.jsonl"  # one shard per input file with rejects
DROPPED_FILE = "examples/dropped.jsonl"
KEPT = "kept"
# `quality.<label>` reads as the quality score of that label (the `scores` struct column)
FIELD_ALIASES = {"quality": "scores"}
PREVIEW_CHARS = 240

_OPERATORS = {">=": operator.ge, "<=": operator.le, "!=": operator.ne, "==": operator.eq, "=": operator.eq,
              ">": operator.gt, "<": operator.lt}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|!=|==|=|>|<)\s*(.+?)\s*$")


class InspectError(ValueError):
    """Bad input to an inspect command (shown to the user as one line)."""


@dataclass(frozen=True)
class Condition:
    """``path op value``, e.g. ``scores.wiki > 0.5``; ``path`` is split on dots into nested fields."""

    path: tuple[str, ...]
    op: str
    value: Any

    def __str__(self) -> str:
        return f"{'.'.join(self.path)}{self.op}{self.value!r}"

    def expression(self):
        """The condition as a pyarrow dataset expression."""
        import pyarrow.dataset as ds

        field = ds.field(*self.path)
        return _OPERATORS[self.op](field, self.value)

    def matches(self, row: Mapping[str, Any]) -> bool:
        """The condition on a plain dict (JSONL rows); a missing field never matches."""
        value: Any = row
        for part in self.path:
            if not isinstance(value, Mapping) or part not in value or value[part] is None:
                return False
            value = value[part]
        try:
            return bool(_OPERATORS[self.op](value, self.value))
        except TypeError:
            return False


def parse_condition(text: str) -> Condition:
    """``'quality.wiki>0.5'`` -> Condition(("scores", "wiki"), ">", 0.5); numbers are parsed, quotes stripped."""
    match = _CONDITION.match(text)
    if not match:
        raise InspectError(f"cannot parse --where {text!r}: expected FIELD OP VALUE with OP one of > >= < <= == !=, "
                           "e.g. 'quality.wiki>0.5' or 'language==en'")
    path, op, raw = match.groups()
    parts = path.split(".")
    parts[0] = FIELD_ALIASES.get(parts[0], parts[0])
    value: Any = raw.strip("'\"")
    if value == raw:
        try:
            value = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                value = raw
    return Condition(tuple(parts), "==" if op == "=" else op, value)


def field_paths(schema) -> list[str]:
    """Every leaf field of a pyarrow schema as a dotted path (``scores.wiki``, ``line_counts.in``)."""
    import pyarrow as pa

    paths: list[str] = []

    def walk(prefix: str, field) -> None:
        if pa.types.is_struct(field.type):
            for child in field.type:
                walk(f"{prefix}{field.name}.", child)
        else:
            paths.append(prefix + field.name)

    for field in schema:
        walk("", field)
    return paths


def check_conditions(conditions: Sequence[Condition], schema) -> None:
    """Fail with the list of valid fields when a condition names a field the documents do not have."""
    known = set(field_paths(schema))
    for condition in conditions:
        if ".".join(condition.path) not in known:
            raise InspectError(f"--where {condition}: no field {'.'.join(condition.path)!r}; fields: {', '.join(sorted(known))}")


@dataclass
class TextOutput:
    """Where the pieces of one text output are (a run folder, a documents/ folder or one Parquet file)."""

    parquet_files: list[Path]
    folder: Path | None  # the run folder (stats.json, rejects, examples) when there is one

    def read_stats(self) -> dict | None:
        path = self.folder / STATS_FILE if self.folder else None
        return json.loads(path.read_text("utf-8")) if path and path.exists() else None

    def read_jsonl(self, relative: str) -> list[dict]:
        """Rows of the JSONL file(s) at ``relative`` (a path or a glob), in file-name order."""
        if self.folder is None:
            return []
        return [json.loads(line) for path in sorted(self.folder.glob(relative))
                for line in path.read_text("utf-8").splitlines() if line.strip()]


def is_text_output(path: Path) -> bool:
    return path.suffix == ".parquet" or (path / DOCUMENTS_DIR).is_dir() or (path.is_dir() and any(path.glob("*.parquet")))


def locate(path: str | Path) -> TextOutput:
    """Find the Parquet shards and the run folder of ``path``."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".parquet":
            raise InspectError(f"{path}: not a Parquet file")
        folder = path.parent.parent if path.parent.name == DOCUMENTS_DIR else None
        return TextOutput([path], folder if folder and (folder / STATS_FILE).exists() else None)
    if (path / DOCUMENTS_DIR).is_dir():
        return TextOutput(sorted((path / DOCUMENTS_DIR).glob("*.parquet")), path)
    if path.is_dir() and any(path.glob("*.parquet")):
        parent = path.parent if (path.parent / STATS_FILE).exists() else None
        return TextOutput(sorted(path.glob("*.parquet")), parent)
    raise InspectError(f"{path}: no text output here (expected a run folder with documents/, or Parquet files)")


def reason_counts(stats: Mapping[str, Any]) -> list[dict]:
    """One row per outcome of stats.json's documents: kept, each filter reason, each reject reason."""
    docs = stats["documents"]
    total = max(int(docs["in"]), 1)
    rows = [{"outcome": KEPT, "reason": KEPT, "documents": docs["kept"]}]
    rows += [{"outcome": "filtered", "reason": r, "documents": n} for r, n in sorted(docs["filtered"].items(), key=lambda kv: -kv[1])]
    rows += [{"outcome": "rejected", "reason": r, "documents": n} for r, n in sorted(docs["rejected"].items(), key=lambda kv: -kv[1])]
    for row in rows:
        row["percent"] = round(100 * row["documents"] / total, 1)
    return rows


def _line_summary(line_counts: Mapping[str, int] | None) -> dict:
    if not line_counts:
        return {}
    values = list(line_counts.values())
    return {"lines_in": values[0], "lines_kept": values[-1]}


def document_row(row: Mapping[str, Any]) -> dict:
    """What a sample document shows: ids, language, scores, line counts and a text preview."""
    text = row.get("text") or ""
    out = {key: row[key] for key in ("doc_id", "url", "language", "language_score") if key in row}
    if row.get("scores"):
        out["scores"] = dict(row["scores"])
    if row.get("minhash_cluster_size") is not None:
        out["minhash_cluster_size"] = row["minhash_cluster_size"]
    out.update(_line_summary(row.get("line_counts")))
    out["chars"] = len(text)
    out["text"] = text[:PREVIEW_CHARS] + (" [...]" if len(text) > PREVIEW_CHARS else "")
    return out


def _dataset(output: TextOutput):
    import pyarrow.dataset as ds

    if not output.parquet_files:
        raise InspectError("no Parquet shard in this output (every document was dropped?)")
    return ds.dataset([str(p) for p in output.parquet_files], format="parquet")


def inspect_text(path: str | Path, where: Iterable[str] = (), reason: str | None = None, limit: int = 5) -> dict:
    """Everything ``moshi-data inspect`` prints for a text output, as a dict.

    ``reason`` picks which documents are sampled: ``kept`` (the Parquet shards, the default), a
    filter reason (the run's dropped-document examples) or a reject reason (rejects.jsonl).
    """
    output = locate(path)
    conditions = [parse_condition(text) for text in where]
    stats = output.read_stats()
    result: dict[str, Any] = {"kind": "text", "input": str(path), "parquet_files": len(output.parquet_files)}
    if stats is not None:
        result["reasons"] = reason_counts(stats)
        result["documents_in"] = stats["documents"]["in"]
    dataset = _dataset(output) if output.parquet_files else None
    if dataset is not None:
        result["schema"] = [f"{field.name}: {field.type}" for field in dataset.schema]
        result["documents"] = dataset.count_rows()
        languages = dataset.to_table(columns=["language"]).column("language").value_counts().to_pylist()
        result["languages"] = sorted(((item["values"], item["counts"]) for item in languages), key=lambda kv: (-kv[1], kv[0]))
    chosen = reason or KEPT
    known_reasons = {row["reason"]: row["outcome"] for row in result.get("reasons", [])} or {KEPT: KEPT}
    if chosen not in known_reasons:
        raise InspectError(f"--reason {chosen!r}: this run has no such outcome; reasons: {', '.join(sorted(known_reasons))}")
    outcome = known_reasons[chosen]
    if outcome == KEPT:
        if dataset is None:
            result.update({"matching": 0, "samples": []})
            return result
        check_conditions(conditions, dataset.schema)
        expression = None
        for condition in conditions:
            expression = condition.expression() if expression is None else expression & condition.expression()
        result["matching"] = dataset.count_rows(filter=expression)
        rows = dataset.head(limit, filter=expression).to_pylist() if limit > 0 else []
        result["samples"] = [document_row(row) for row in rows]
    else:
        source = DROPPED_FILE if outcome == "filtered" else REJECTS_FILE
        rows = [row for row in output.read_jsonl(source) if row.get("reason") == chosen]
        rows = [row for row in rows if all(condition.matches(row) for condition in conditions)]
        result["matching"] = len(rows)
        result["samples_from"] = source
        result["samples"] = [document_row(row) if outcome == "filtered" else row for row in rows[:limit]]
    result["where"] = [str(condition) for condition in conditions]
    result["reason"] = chosen
    return result


def format_text(result: Mapping[str, Any]) -> str:
    """The human-readable page of :func:`inspect_text`."""
    lines = [f"text output {result['input']}: {result['parquet_files']} Parquet file(s), "
             f"{result.get('documents', 0):,} documents"]
    if "reasons" in result:
        lines += ["", f"documents by outcome ({result['documents_in']:,} in):",
                  *(f"  {row['outcome']:<9} {row['reason']:<28} {row['documents']:>9,}  {row['percent']:5.1f} %"
                    for row in result["reasons"])]
    if result.get("languages"):
        lines += ["", "kept documents per language: " + ", ".join(f"{lang or '?'} {n:,}" for lang, n in result["languages"])]
    if result.get("schema"):
        lines += ["", "schema:", *(f"  {field}" for field in result["schema"])]
    where = " and ".join(result.get("where", [])) or "all"
    lines += ["", f"{result['reason']} documents matching {where}: {result['matching']:,}"
              + (f" (from {result['samples_from']})" if result.get("samples_from") else "")]
    for index, row in enumerate(result.get("samples", []), 1):
        head = [f"[{index}]"] + [f"{key}={row[key]}" for key in ("doc_id", "language") if key in row]
        if "language_score" in row:
            head.append(f"language_score={row['language_score']:.2f}")
        if "lines_in" in row:
            head.append(f"lines {row['lines_in']} -> {row['lines_kept']}")
        if "chars" in row:
            head.append(f"{row['chars']:,} chars")
        lines += ["", "  ".join(head)]
        if row.get("url"):
            lines.append(f"    url: {row['url']}")
        if row.get("scores"):
            lines.append("    scores: " + " ".join(f"{label}={value:.2f}" for label, value in row["scores"].items()))
        if row.get("message"):
            lines.append(f"    {row.get('source', '')} @ {row.get('record_offset', '')}: {row['message']}")
        if row.get("text"):
            lines += ["    | " + text_line for text_line in row["text"].splitlines()[:8]]
    return "\n".join(lines)
