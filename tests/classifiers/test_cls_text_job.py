"""The text job with every Helium stage on real documents: exact dedup -> fuzzy dedup -> LID ->
quality -> min length -> MinHash -> Parquet, with scores on every document, counts per stage and
reason in stats.json, and report.html with its plots."""
from __future__ import annotations

import gzip
import hashlib
import json

import pyarrow.parquet as pq
import pytest

from moshi_data.beam_jobs import text_corpus
from moshi_data.pipeline.text.accounting import check_invariant
from test_cls_e2e import TINY
from test_cls_escopete import NAVIGATION, site_pages

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
LABELS = ["rand", "wiki", "books", "science", "news", "stem", "life", "hum", "pop"]


def wet_record(url: str, text: str, record_type: str = "conversion") -> bytes:
    body = text.encode("utf-8")
    headers = [("WARC-Type", record_type), ("WARC-Target-URI", url), ("WARC-Date", "2019-07-17T00:00:00Z"),
               ("WARC-Record-ID", f"<urn:uuid:{hashlib.md5(url.encode()).hexdigest()}>"),
               ("Content-Type", "text/plain"), ("Content-Length", str(len(body)))]
    return ("WARC/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers) + "\r\n").encode() + body + b"\r\n\r\n"


def english_documents(shared_data, count: int) -> list[tuple[str, str]]:
    path = shared_data / "wet" / "cc_text_jsonl" / "dolma_cc_en_head-0091.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    return [(r["metadata"].get("url") or f"https://doc{i}.example/", r["text"]) for i, r in enumerate(records)][:count]


@pytest.fixture(scope="module")
def job(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job")
    docs = english_documents(shared_data, 10)
    # A mirror of a real page with one word added to every line: no line is an exact duplicate any
    # more, but the word 5-gram Jaccard similarity stays above 0.8.
    near_duplicate = ("https://mirror.example/copy", "\n".join(line + " Indeed." for line in docs[6][1].split("\n")))
    pages = [(f"https://an.wikipedia.org/wiki/page{i}", "\n".join(page)) for i, page in enumerate(site_pages(shared_data))]
    records = [wet_record("", "isPartOf: CC-MAIN-2019-30\r\n", "warcinfo")]
    records += [wet_record(u, t) for u, t in [*docs, *pages, near_duplicate]]
    wet = tmp / "input.warc.wet.gz"
    wet.write_bytes(b"".join(gzip.compress(r, mtime=0) for r in records))
    overrides = [f"classifiers.overrides=[models_dir={tmp / 'models'}, {', '.join(TINY)}]",
                 "language.languages=[en, an, es]", "language.threshold=0.5", "input.docs_per_chunk=8"]
    output = tmp / "out"
    result = text_corpus.run(str(wet), str(output), overrides=overrides, beam_args=IN_PROCESS)
    return {"output": output, "stats": result["stats"], "n_docs": len(records) - 1, "near_duplicate": near_duplicate}


def test_counts_per_stage_and_reason_add_up(job):
    stats = job["stats"]
    check_invariant(stats)
    assert stats["documents"]["in"] == job["n_docs"]
    assert stats["stages"] == ["in", "exact_dedup", "fuzzy_dedup", "language", "quality", "min_length", "minhash"]
    assert set(stats["funnel"]) == set(stats["stages"])
    funnel = [stats["funnel"][stage]["documents"] for stage in stats["stages"]]
    assert funnel == sorted(funnel, reverse=True) and funnel[-1] == stats["documents"]["kept"]
    assert stats["funnel"]["minhash"]["lines"] == stats["lines"]["kept"]
    assert stats["documents"]["filtered"]["near_duplicate"] == 1
    assert "fuzzy_dedup" in stats["lines"]["removed"] and stats["lines"]["removed"]["exact_dedup"] > 100
    assert set(stats["quality_histogram"]) == set(LABELS)


def test_every_document_carries_its_nine_scores_and_cluster_size(job):
    rows = pq.read_table(job["output"] / "documents").to_pylist()
    assert len(rows) == job["stats"]["documents"]["kept"] > 0
    for row in rows:
        assert list(row["scores"]) == LABELS and all(0.0 <= v <= 1.0 for v in row["scores"].values())
        assert row["scores"]["rand"] <= 0.9
        assert row["line_counts"]["minhash"] == len([line for line in row["text"].split("\n") if line.strip()])
    urls = {row["url"]: row for row in rows}
    assert job["near_duplicate"][0] not in urls
    assert max(row["minhash_cluster_size"] for row in rows) == 2


def test_repeated_site_navigation_is_gone_from_the_output(job):
    rows = pq.read_table(job["output"] / "documents", columns=["url", "text"]).to_pylist()
    site_rows = [row for row in rows if "wikipedia.org/wiki/page" in row["url"] and row["url"] != "https://an.wikipedia.org/wiki/page0"]
    for row in site_rows:
        assert not set(NAVIGATION) & set(row["text"].split("\n"))


def test_report_is_written_with_plots(job):
    output = job["output"]
    page = (output / "report.html").read_text("utf-8")
    for name in ("funnel", "lid_scores", "quality_scores"):  # plots embedded: the page is self-contained
        assert f"<img alt='{name}' src='data:image/png;base64," in page
    assert "Most frequent removed lines" in page and any(f"<td>{line}</td>" in page for line in ("Portalada", "Actualidat"))
    assert "near_duplicate" in page
    dropped = [json.loads(line) for line in (output / "examples" / "dropped.jsonl").read_text("utf-8").splitlines()]
    assert {d["reason"] for d in dropped} == set(job["stats"]["documents"]["filtered"]) >= {"near_duplicate"}
