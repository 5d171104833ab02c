"""Parquet output of the text job: schema built from the stage chain, deterministic bytes."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq

from moshi_data.pipeline.text.document import Document
from moshi_data.pipeline.text.stages import EXACT_DEDUP

# Optional text columns: a value the input did not carry is null, never "".
OPTIONAL_STRINGS = ("url", "record_id", "date", "crawl", "content_language")
RUN_METADATA_KEY = b"moshi_data.run"
# Settings that spread the work and never change what is written: left out of the shards' metadata so
# that their bytes do not depend on them (stats.json's run.config has them).
LAYOUT_FREE_KEYS = (("runner",), ("line_dedup", "partitions"), ("line_dedup", "bytes_per_partition"))

BASE_FIELDS = [
    pa.field("doc_id", pa.string()),
    pa.field("url", pa.string()),
    pa.field("text", pa.string()),
    pa.field("language", pa.string()),
    pa.field("language_score", pa.float64()),
    pa.field("record_id", pa.string()),
    pa.field("date", pa.string()),
    pa.field("crawl", pa.string()),
    pa.field("source", pa.string()),
    pa.field("record_offset", pa.int64()),
    pa.field("content_language", pa.string()),
    pa.field("invalid_utf8_bytes", pa.int32()),
]


def documents_schema(stages: list, cross_document: dict | None = None) -> pa.Schema:
    """Base columns, ``line_counts`` (lines left after each stage), then each stage's own columns;
    ``cross_document`` maps cross-document stage names (MinHash) to the columns they add."""
    cross_document = cross_document or {}
    steps = ["in", EXACT_DEDUP, *[stage.name for stage in stages], *cross_document]
    line_counts = pa.field("line_counts", pa.struct([pa.field(step, pa.int32()) for step in steps]))
    extra = [col for columns in cross_document.values() for col in columns]
    return pa.schema([*BASE_FIELDS, line_counts, *[col for stage in stages for col in stage.columns], *extra])


def documents_table(docs: list[Document], schema: pa.Schema) -> pa.Table:
    columns = {
        "doc_id": [d.doc_id for d in docs], "url": [d.url for d in docs], "text": [d.text for d in docs],
        "language": [d.language for d in docs], "language_score": [d.language_score for d in docs],
        "record_id": [d.record_id for d in docs], "date": [d.date for d in docs],
        "crawl": [d.crawl for d in docs], "source": [d.source for d in docs],
        "record_offset": [d.record_offset for d in docs], "content_language": [d.content_language for d in docs],
        "invalid_utf8_bytes": [d.invalid_utf8_bytes for d in docs],
        "line_counts": [d.line_counts for d in docs],
    }
    for name in OPTIONAL_STRINGS:
        columns[name] = [value or None for value in columns[name]]
    for column in schema.names:
        if column not in columns:
            columns[column] = [d.fields.get(column) for d in docs]
    return pa.Table.from_pydict({name: columns[name] for name in schema.names}, schema=schema)


def run_metadata(run: dict | None) -> dict[bytes, bytes]:
    """Parquet key-value metadata holding the run's provenance (the ``run`` block of stats.json without
    its timing, so that the same input and config give the same bytes)."""
    if run is None:
        return {}
    return {RUN_METADATA_KEY: json.dumps(shard_run(run), sort_keys=True, default=str).encode()}


def shard_run(run: dict) -> dict:
    """The run block as the Parquet shards carry it: without timing, the runner and :data:`LAYOUT_FREE_KEYS`."""
    config = json.loads(json.dumps(run.get("config", {}), default=str))
    for path in LAYOUT_FREE_KEYS:
        node = config
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return {**{k: v for k, v in run.items() if k not in ("started", "wall_s", "runner")}, "config": config}


def parquet_bytes(table: pa.Table, compression: str, level: int, row_group_rows: int) -> bytes:
    """Serialize a table to Parquet (same table + options -> same bytes)."""
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression, compression_level=level,
                   row_group_size=row_group_rows, write_statistics=True)
    return sink.getvalue()
