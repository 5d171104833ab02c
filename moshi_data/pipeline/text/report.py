"""Run report of the text job: ``report.html`` + PNG plots, readable in a minute.

Built from ``stats.json`` (funnel per stage, filter reasons, LID and quality score histograms) and
small samples (most frequent removed lines, kept and dropped document examples). ``render_report``
returns file name -> bytes so the job writes them with its own (local or remote) storage;
``python -m moshi_data.pipeline.text.report --output DIR`` rebuilds the report of a finished run.
"""
from __future__ import annotations

import argparse
import html
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

FUNNEL_METRICS = ("documents", "lines", "bytes")
EXAMPLE_CHARS = 600


def funnel_rows(stats: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """(stage, {documents, lines, bytes}) after each stage, in pipeline order."""
    funnel = stats.get("funnel", {})
    order = ["in", *[stage for stage in stats.get("stages", []) if stage != "in"]]
    order += [stage for stage in funnel if stage not in order]
    return [(stage, funnel[stage]) for stage in order if stage in funnel]


def _histogram_items(histogram: Mapping[str, int]) -> list[tuple[float, int]]:
    return sorted((float(bucket.split("-")[0]), count) for bucket, count in histogram.items())


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def render_plots(stats: Mapping[str, Any]) -> dict[str, bytes]:
    """funnel.png, lid_scores.png, quality_scores.png (each only when its data exists)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots: dict[str, bytes] = {}
    rows = funnel_rows(stats)
    if rows:
        figure, axes = plt.subplots(1, 3, figsize=(13, 3.2))
        names = [stage for stage, _ in rows]
        for axis, metric in zip(axes, FUNNEL_METRICS):
            values = [row.get(metric, 0) for _, row in rows]
            axis.bar(range(len(values)), values, color="#4878a8")
            axis.set_xticks(range(len(values)), names, rotation=35, ha="right", fontsize=8)
            axis.set_title(f"{metric} after each stage", fontsize=10)
        plots["funnel.png"] = _png(figure)
        plt.close(figure)
    lid = stats.get("language", {}).get("score_histogram", {})
    if lid:
        items = _histogram_items(lid)
        figure, axis = plt.subplots(figsize=(6, 3))
        axis.bar([x for x, _ in items], [c for _, c in items], width=0.045, align="edge", color="#6a9f58")
        axis.set_title("language ID score of the top language (all documents)", fontsize=10)
        plots["lid_scores.png"] = _png(figure)
        plt.close(figure)
    quality = stats.get("quality_histogram", {})
    if quality:
        labels = sorted(quality, key=lambda label: (label != "rand", label))  # the negative class first
        columns = 3
        rows_n = (len(labels) + columns - 1) // columns
        figure, axes = plt.subplots(rows_n, columns, figsize=(12, 2.4 * rows_n), squeeze=False)
        for axis, label in zip(axes.flat, labels):
            items = _histogram_items(quality[label])
            axis.bar([x for x, _ in items], [c for _, c in items], width=0.045, align="edge", color="#c0504d")
            axis.set_title(f"quality score: {label}", fontsize=9)
            axis.set_xlim(0, 1)
        for axis in list(axes.flat)[len(labels):]:
            axis.axis("off")
        figure.tight_layout()
        plots["quality_scores.png"] = _png(figure)
        plt.close(figure)
    return plots


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _example(title: str, text: str) -> str:
    shown = text[:EXAMPLE_CHARS] + (" [...]" if len(text) > EXAMPLE_CHARS else "")
    return f"<details><summary>{html.escape(title)}</summary><pre>{html.escape(shown)}</pre></details>"


def render_html(stats: Mapping[str, Any], plots: Sequence[str], removed_lines: Sequence[Mapping[str, Any]],
                kept: Sequence[Mapping[str, Any]], dropped: Sequence[Mapping[str, Any]]) -> str:
    """The report page (plots referenced by file name)."""
    docs, lines = stats["documents"], stats["lines"]
    rows = funnel_rows(stats)
    funnel = _table(["stage", *FUNNEL_METRICS],
                    [(stage, *(f"{row.get(m, 0):,}" for m in FUNNEL_METRICS)) for stage, row in rows])
    reasons = [("filtered", reason, n) for reason, n in sorted(docs["filtered"].items(), key=lambda kv: -kv[1])]
    reasons += [("rejected", reason, n) for reason, n in sorted(docs["rejected"].items(), key=lambda kv: -kv[1])]
    line_reasons = sorted(lines["removed"].items(), key=lambda kv: -kv[1])
    by_reason: dict[str, list] = {}
    for example in dropped:
        by_reason.setdefault(example["kind"], []).append(example)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Text corpus run report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;font-size:12px}</style></head><body>",
        "<h1>Text corpus run report</h1>",
        f"<p><b>{docs['kept']:,}</b> of {docs['in']:,} documents kept "
        f"({100 * docs['kept'] / max(docs['in'], 1):.1f} %); {lines['kept']:,} of {lines['in']:,} lines kept. "
        f"Stages: {' &rarr; '.join(html.escape(s) for s in stats.get('stages', []))}.</p>",
        "<h2>Funnel</h2>", funnel,
        *(f"<img src='{name}' alt='{name}'>" for name in plots if name == "funnel.png"),
        "<h2>Why documents were dropped</h2>", _table(["kind", "reason", "documents"], reasons),
        "<h2>Where lines were removed</h2>", _table(["stage / reason", "lines"], line_reasons),
        "<h2>Scores</h2>",
        *(f"<img src='{name}' alt='{name}'><br>" for name in plots if name != "funnel.png"),
        "<h2>Most frequent removed lines</h2>",
        _table(["line", "occurrences"], [(r["text"][:160], r["count"]) for r in removed_lines]),
        "<h2>Examples of kept documents</h2>",
        *(_example(f"{e.get('url', '')} {json.dumps(e.get('scores') or {})}", e["text"]) for e in kept),
        "<h2>Examples of dropped documents, per reason</h2>",
    ]
    for reason in sorted(by_reason):
        parts.append(f"<h3>{html.escape(reason)}</h3>")
        parts += [_example(e.get("url", ""), e["text"]) for e in by_reason[reason]]
    parts.append("</body></html>")
    return "\n".join(parts)


def render_report(stats: Mapping[str, Any], removed_lines: Sequence[Mapping[str, Any]],
                  kept: Sequence[Mapping[str, Any]], dropped: Sequence[Mapping[str, Any]]) -> dict[str, bytes]:
    """File name -> bytes of report.html and its PNG plots."""
    plots = render_plots(stats)
    page = render_html(stats, list(plots), removed_lines, kept, dropped)
    return {"report.html": page.encode("utf-8"), **plots}


def most_frequent_duplicates(samples: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """The duplicate lines of the line samples with the highest counts."""
    duplicates = [s for s in samples if s.get("duplicate")]
    return sorted(duplicates, key=lambda s: (-s["count"], s["text"]))[:limit]


def _read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text("utf-8").split("\n") if line.strip()]


def kept_examples(documents_dir: Path, limit: int) -> list[dict]:
    """The first ``limit`` documents of the first Parquet shards."""
    import pyarrow.parquet as pq

    examples: list[dict] = []
    for shard in sorted(documents_dir.glob("*.parquet")):
        columns = [c for c in ("url", "text", "scores") if c in pq.read_schema(shard).names]
        examples += pq.read_table(shard, columns=columns).slice(0, limit - len(examples)).to_pylist()
        if len(examples) >= limit:
            break
    return examples


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild report.html (+ PNGs) of a finished text-corpus run.")
    parser.add_argument("--output", required=True, help="the run's output folder (holds stats.json)")
    parser.add_argument("--examples", type=int, default=5, help="kept documents to show")
    parser.add_argument("--removed-lines", type=int, default=30, help="most frequent removed lines to show")
    args = parser.parse_args(argv)
    out = Path(args.output)
    stats = json.loads((out / "stats.json").read_text("utf-8"))
    files = render_report(
        stats,
        most_frequent_duplicates(_read_jsonl(out / "line_samples" / "line_samples.jsonl"), args.removed_lines),
        kept_examples(out / "documents", args.examples),
        _read_jsonl(out / "examples" / "dropped.jsonl"),
    )
    for name, data in files.items():
        (out / name).write_bytes(data)
    print(f"wrote {out / 'report.html'} (+ {len(files) - 1} plots)")


if __name__ == "__main__":
    main()
