"""Counters of the text job and the invariant that every document and line is accounted for.

A ``Tally`` is a flat ``Counter`` with dotted keys (``documents.filtered.language``) so partial
tallies merge by addition; ``to_stats`` nests them (split on the first two dots) into stats.json.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping


class AccountingError(AssertionError):
    """Counts do not add up: a document or line was lost or counted twice."""


def add_to_funnel(tally: Counter, stage: str, doc) -> None:
    """Count a document that passed ``stage`` in ``funnel.<stage>.{documents,lines,bytes}``."""
    tally[f"funnel.{stage}.documents"] += 1
    tally[f"funnel.{stage}.lines"] += len(doc.lines)
    tally[f"funnel.{stage}.bytes"] += doc.text_bytes


def to_stats(tally: Mapping[str, int | float]) -> dict[str, Any]:
    """Nest dotted keys: ``a.b.c`` -> ``{"a": {"b": {"c": v}}}`` (keys sorted for stable JSON)."""
    stats: dict[str, Any] = {
        "documents": {"in": 0, "kept": 0, "filtered": {}, "rejected": {}},
        "lines": {"in": 0, "kept": 0, "removed": {}},
    }
    for key in sorted(tally):
        parts = key.split(".", 2)
        node = stats
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = tally[key]
    return stats


def check_invariant(stats: Mapping[str, Any]) -> None:
    """Raise ``AccountingError`` unless in = kept + filtered + rejected (documents) and
    in = kept + removed (lines)."""
    docs, lines = stats["documents"], stats["lines"]
    doc_total = docs["kept"] + sum(docs["filtered"].values()) + sum(docs["rejected"].values())
    if docs["in"] != doc_total:
        raise AccountingError(f"documents: in={docs['in']} but kept+filtered+rejected={doc_total}: {docs}")
    line_total = lines["kept"] + sum(lines["removed"].values())
    if lines["in"] != line_total:
        raise AccountingError(f"lines: in={lines['in']} but kept+removed={line_total}: {lines}")
