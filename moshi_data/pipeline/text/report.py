"""Run report of the text job: one self-contained ``report.html`` (plots embedded), readable in a minute.

Built only from what the run wrote: ``stats.json`` (funnel per stage, filter reasons, detected
languages, LID and quality score histograms, the ``run`` block when present), the line samples
(most frequent removed lines), the dropped-document examples and the first kept documents of the
Parquet shards; thresholds come from the job's config. The job's launcher (once stats.json holds the
run's date and wall time) and ``moshi-data text-report --output DIR`` both call :func:`build_report`
on those files, so the rebuild gives the same bytes.
"""
from __future__ import annotations

import base64
import html
import io
import json
from typing import Any, Mapping, Sequence

from moshi_data.pipeline import storage

REPORT_FILE = "report.html"
STATS_FILE = "stats.json"
SAMPLES_PATH = ("line_samples", "line_samples.jsonl")
DROPPED_PATH = ("examples", "dropped.jsonl")
DOCUMENTS_DIR = "documents"
FUNNEL_METRICS = ("documents", "lines", "bytes")
EXAMPLE_CHARS = 600
TOP_LANGUAGES = 25
DOMINANT_BAR = 10  # log-scale counts when the highest bar is this many times the median non-empty bar


def funnel_rows(stats: Mapping[str, Any]) -> list[tuple[str, dict]]:
    """(stage, {documents, lines, bytes}) after each stage, in pipeline order."""
    funnel = stats.get("funnel", {})
    order = ["in", *[stage for stage in stats.get("stages", []) if stage != "in"]]
    order += [stage for stage in funnel if stage not in order]
    return [(stage, funnel[stage]) for stage in order if stage in funnel]


def thresholds(config: Mapping[str, Any]) -> dict[str, Any]:
    """The thresholds the report draws, from the run's config (classifier sections attached, as the
    job runs it and records it in stats.json)."""
    quality_filter = (config.get("quality") or {}).get("filter") or {}
    return {"language": float(config["language"]["threshold"]), "languages": list(config["language"]["languages"]),
            "max_rand_score": quality_filter.get("max_rand_score"),
            "min_scores": dict(quality_filter.get("min_scores") or {}),
            "min_chars": config.get("min_length", {}).get("min_chars")}


def with_classifier_filter(config: Mapping[str, Any]) -> dict[str, Any]:
    """A text config not attached to its classifiers (a run without ``run.config``): its quality
    filter filled from the classifier config, values set in the text config winning."""
    from moshi_data.pipeline.config import deep_merge, load_config

    classifier = load_config(config["classifiers"]["config"])["quality"]["filter"]
    own = (config.get("quality") or {}).get("filter") or {}  # null = "from the classifier config"
    quality_filter = deep_merge(classifier, {key: value for key, value in own.items() if value is not None})
    return deep_merge(config, {"quality": {"filter": quality_filter}})


def _histogram_items(histogram: Mapping[str, int]) -> list[tuple[float, int]]:
    return sorted((float(bucket.split("-")[0]), count) for bucket, count in histogram.items())


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _dominated(counts: Sequence[int]) -> bool:
    nonzero = sorted(c for c in counts if c > 0)
    return len(nonzero) > 1 and nonzero[-1] >= DOMINANT_BAR * nonzero[len(nonzero) // 2]


def _score_bars(axis, histogram: Mapping[str, int], colour: str, threshold: float | None, keep: str) -> None:
    items = _histogram_items(histogram)
    counts = [c for _, c in items]
    axis.bar([x for x, _ in items], counts, width=0.045, align="edge", color=colour)
    if _dominated(counts):
        axis.set_yscale("log")
        axis.set_ylabel("documents (log)", fontsize=8)
    if threshold is not None:
        axis.axvline(threshold, color="black", linestyle="--", linewidth=1)
        axis.annotate(f"{keep} {threshold:g}", (threshold, 0.92), xycoords=("data", "axes fraction"),
                      xytext=(3, 0), textcoords="offset points", fontsize=8)
    axis.set_xlim(0, 1)


def render_plots(stats: Mapping[str, Any], limits: Mapping[str, Any]) -> dict[str, bytes]:
    """funnel, lid_scores, quality_scores PNGs (each only when its data exists)."""
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
            if _dominated(values):
                axis.set_yscale("log")
        plots["funnel"] = _png(figure)
        plt.close(figure)
    lid = stats.get("language", {}).get("score_histogram", {})
    if lid:
        figure, axis = plt.subplots(figsize=(6.5, 3))
        _score_bars(axis, lid, "#6a9f58", limits.get("language"), "keep >=")
        axis.set_title("language ID score of the top language (documents that reached LID)", fontsize=10)
        plots["lid_scores"] = _png(figure)
        plt.close(figure)
    quality = stats.get("quality_histogram", {})
    if quality:
        labels = sorted(quality, key=lambda label: (label != "rand", label))  # the negative class first
        columns = 3
        rows_n = (len(labels) + columns - 1) // columns
        figure, axes = plt.subplots(rows_n, columns, figsize=(12, 2.4 * rows_n), squeeze=False)
        for axis, label in zip(axes.flat, labels):
            if label == "rand":
                threshold, keep = limits.get("max_rand_score"), "keep <="
            else:
                threshold, keep = limits.get("min_scores", {}).get(label), "keep >="
            _score_bars(axis, quality[label], "#c0504d", threshold, keep)
            axis.set_title(f"quality score: {label}", fontsize=9)
        for axis in list(axes.flat)[len(labels):]:
            axis.axis("off")
        figure.tight_layout()
        plots["quality_scores"] = _png(figure)
        plt.close(figure)
    return plots


def _img(png: bytes, alt: str) -> str:
    return f"<img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode('ascii')}'>"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f} %" if whole else "-"


def funnel_table(stats: Mapping[str, Any]) -> list[tuple]:
    """Per stage: what is left (and its share of the input) and what the stage removed, per metric."""
    rows = funnel_rows(stats)
    if not rows:
        return []
    first = rows[0][1]
    table, previous = [], None
    for stage, row in rows:
        cells: list[Any] = [stage]
        for metric in FUNNEL_METRICS:
            value = row.get(metric, 0)
            removed = "" if previous is None else f"{previous.get(metric, 0) - value:,}"
            cells += [f"{value:,}", _percent(value, first.get(metric, 0)), removed]
        table.append(tuple(cells))
        previous = row
    return table


def _scores_text(scores: Mapping[str, float] | None, top: int = 3) -> str:
    if not scores:
        return ""
    best = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return " ".join(f"{label} {value:.2f}" for label, value in best)


def _examples_table(examples: Sequence[Mapping[str, Any]]) -> str:
    head = "<tr><th>outcome</th><th>url</th><th>language</th><th>LID score</th><th>rand</th><th>top quality scores</th><th>text</th></tr>"
    body = []
    for example in examples:
        text = example.get("text") or ""
        shown = text[:EXAMPLE_CHARS] + (" [...]" if len(text) > EXAMPLE_CHARS else "")
        score = example.get("language_score")
        scores = example.get("scores") or {}
        cells = [" / ".join(filter(None, (example.get("outcome"), example.get("reason")))), example.get("url", ""), example.get("language") or "",
                 "" if score is None else f"{score:.2f}", "" if "rand" not in scores else f"{scores['rand']:.2f}",
                 _scores_text({k: v for k, v in scores.items() if k != "rand"})]
        body.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                    + f"<td class='text'><details><summary>{html.escape(shown[:80])}</summary><pre>{html.escape(shown)}</pre>"
                    "</details></td></tr>")
    return f"<table class='examples'>{head}{''.join(body)}</table>"


def _run_metadata(stats: Mapping[str, Any], limits: Mapping[str, Any]) -> str:
    rows = [("input files", f"{stats.get('files', {}).get('in', 0):,}"),
            ("input bytes (compressed)", f"{stats.get('input', {}).get('compressed_bytes', 0):,}"),
            ("output shards / bytes", f"{stats.get('output', {}).get('shards', 0):,} / {stats.get('output', {}).get('bytes', 0):,}"),
            ("stages", " -> ".join(stats.get("stages", []))),
            ("target languages / LID threshold", f"{', '.join(limits.get('languages', []))} / {limits.get('language')}"),
            ("quality rule", f"rand <= {limits.get('max_rand_score')}"
             + "".join(f", {label} >= {value}" for label, value in sorted(limits.get("min_scores", {}).items()))),
            ("minimum length (chars)", limits.get("min_chars"))]
    run = stats.get("run") or {}
    config = None
    for key, value in sorted(run.items()):
        if key == "config":
            config = value
        else:
            rows.append((key, json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value))
    if not run:
        rows.append(("run", "no run block in stats.json (version, date and wall time not recorded)"))
    parts = [_table(["run", ""], rows)]
    if config is not None:
        parts.append("<details><summary>resolved config</summary><pre>"
                     + html.escape(json.dumps(config, indent=1, sort_keys=True, default=str)) + "</pre></details>")
    return "\n".join(parts)


def render_html(stats: Mapping[str, Any], limits: Mapping[str, Any], removed_lines: Sequence[Mapping[str, Any]],
                kept: Sequence[Mapping[str, Any]], dropped: Sequence[Mapping[str, Any]]) -> str:
    """The report page, plots embedded as data URIs."""
    plots = render_plots(stats, limits)
    docs, lines = stats["documents"], stats["lines"]
    total = docs["in"]
    reasons = [("filtered", reason, f"{n:,}", _percent(n, total)) for reason, n in sorted(docs["filtered"].items(), key=lambda kv: -kv[1])]
    reasons += [("rejected", reason, f"{n:,}", _percent(n, total)) for reason, n in sorted(docs["rejected"].items(), key=lambda kv: -kv[1])]
    line_reasons = [(reason, f"{n:,}", _percent(n, lines["in"])) for reason, n in sorted(lines["removed"].items(), key=lambda kv: -kv[1]) if n]
    detected = stats.get("language", {}).get("detected", {})
    ranked = sorted(detected.items(), key=lambda kv: (-kv[1], kv[0]))
    identified = sum(detected.values())
    language_rows = [(lang, f"{n:,}", _percent(n, identified), "yes" if lang in limits.get("languages", []) else "")
                     for lang, n in ranked[:TOP_LANGUAGES]]
    if len(ranked) > TOP_LANGUAGES:
        rest = sum(n for _, n in ranked[TOP_LANGUAGES:])
        language_rows.append((f"{len(ranked) - TOP_LANGUAGES} others", f"{rest:,}", _percent(rest, identified), ""))
    by_reason: dict[str, list] = {}
    for example in dropped:
        by_reason.setdefault(example["reason"], []).append(example)
    funnel_headers = ["stage"] + [f"{m} {h}" for m in FUNNEL_METRICS for h in ("left", "% of input", "removed by this stage")]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Text corpus run report</title><style>"
        "body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child{text-align:left}img{max-width:100%}"
        "table.examples td{text-align:left;vertical-align:top;font-size:13px}td.text{max-width:480px}"
        "pre{white-space:pre-wrap;background:#f6f6f6;padding:.5em;font-size:12px}</style></head><body>",
        "<h1>Text corpus run report</h1>",
        f"<p><b>{docs['kept']:,}</b> of {total:,} documents kept ({_percent(docs['kept'], total)}); "
        f"{lines['kept']:,} of {lines['in']:,} lines kept ({_percent(lines['kept'], lines['in'])}).</p>",
        "<h2>Run</h2>", _run_metadata(stats, limits),
        "<h2>Funnel</h2>", _table(funnel_headers, funnel_table(stats)),
        *([_img(plots["funnel"], "funnel")] if "funnel" in plots else []),
        "<h2>Why documents were dropped</h2>", _table(["outcome", "reason", "documents", "% of input"], reasons),
        "<h2>Where lines were removed</h2>", _table(["stage / reason", "lines", "% of input lines"], line_reasons),
    ]
    if language_rows:
        parts += ["<h2>Documents per detected language</h2>",
                  f"<p>Top language of the {identified:,} documents that reached language ID.</p>",
                  _table(["language", "documents", "share", "target"], language_rows)]
    parts.append("<h2>Scores</h2><p>Dashed lines: the thresholds of this run.</p>")
    parts += [_img(plots[name], name) + "<br>" for name in ("lid_scores", "quality_scores") if name in plots]
    parts += ["<h2>Most frequent removed lines</h2>",
              _table(["line", "occurrences"], [(r["text"][:160], r["count"]) for r in removed_lines]),
              "<h2>Examples of kept documents</h2>", _examples_table(kept),
              "<h2>Examples of dropped documents, per reason</h2>"]
    for reason in sorted(by_reason):
        parts += [f"<h3>{html.escape(reason)}</h3>", _examples_table(by_reason[reason])]
    parts.append("</body></html>")
    return "\n".join(parts)


def most_frequent_duplicates(samples: Sequence[Mapping[str, Any]], limit: int) -> list[Mapping[str, Any]]:
    """The duplicate lines of the line samples with the highest counts."""
    duplicates = [s for s in samples if s.get("duplicate")]
    return sorted(duplicates, key=lambda s: (-s["count"], s["text"]))[:limit]


def read_jsonl(path: str) -> list[dict]:
    if not storage.exists(path):
        return []
    return [json.loads(line) for line in storage.read_bytes(path).decode("utf-8").split("\n") if line.strip()]


def kept_examples(output: str, limit: int) -> list[dict]:
    """The first ``limit`` documents of the Parquet shards in name order (local or remote)."""
    import pyarrow.parquet as pq

    examples: list[dict] = []
    folder = storage.join(output, DOCUMENTS_DIR)
    shards = sorted(path for path in storage.list_folder(folder) if path.endswith(".parquet")) if storage.exists(folder) else []
    for shard in shards:
        if len(examples) >= limit:
            break
        with storage.open_read(shard) as handle:  # only the first row batch of the needed columns is read
            parquet = pq.ParquetFile(handle)
            columns = [c for c in ("url", "text", "language", "language_score", "scores") if c in parquet.schema_arrow.names]
            batch = next(parquet.iter_batches(batch_size=limit - len(examples), columns=columns), None)
        if batch is not None:
            examples += [{"outcome": "kept", "reason": None, **row} for row in batch.to_pylist()]
    return examples


def build_report(output: str, stats: Mapping[str, Any], config: Mapping[str, Any]) -> bytes:
    """report.html of the run in ``output`` from its files (line samples, dropped examples, Parquet
    shards) and ``stats``; what the job writes and what ``text-report`` rebuilds."""
    report = config["report"]
    samples = read_jsonl(storage.join(output, *SAMPLES_PATH))
    page = render_html(stats, thresholds(config), most_frequent_duplicates(samples, int(report["removed_lines"])),
                       kept_examples(output, int(report["examples_per_reason"])),
                       read_jsonl(storage.join(output, *DROPPED_PATH)))
    return page.encode("utf-8")


def main(argv=None) -> int:
    from moshi_data.pipeline.command import command_parser, run_command

    parser = command_parser(__name__, "Rebuild report.html of a finished text-corpus run (the page the job wrote). "
                                      "The run's config comes from stats.json (run.config) when it has one, else "
                                      "from --config/--set.", config="text_corpus")
    parser.add_argument("--output", required=True, help="the run's output folder (holds stats.json), local or s3://")
    parser.add_argument("--report", help="write the page here instead of OUTPUT/report.html")
    return run_command(parser, argv, _main)


def _main(args) -> None:
    from moshi_data.pipeline.command import UserError

    stats_path = storage.join(args.output, STATS_FILE)
    if not storage.exists(stats_path):
        raise UserError(f"{stats_path} not found (not a finished text-corpus run)")
    stats = json.loads(storage.read_bytes(stats_path).decode("utf-8"))
    recorded = (stats.get("run") or {}).get("config")
    config = recorded if isinstance(recorded, Mapping) and "report" in recorded else with_classifier_filter(args.cfg)
    target = args.report or storage.join(args.output, REPORT_FILE)
    storage.write_bytes_atomic(target, build_report(args.output, stats, config))
    print(f"wrote {target}")


if __name__ == "__main__":
    raise SystemExit(main())
