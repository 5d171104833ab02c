"""WET parsing: provenance by header name, and every kind of bad input as a counted reject."""
from __future__ import annotations

import pytest

from moshi_data.pipeline.text.document import Document, Reject
from moshi_data.pipeline.text.wet import FileReport, WetLimits, read_wet
from text_helpers import warcinfo, wet_record, write_wet

LIMITS = WetLimits(max_line_chars=1_000_000, max_invalid_utf8_ratio=0.01)


def read(path):
    report = FileReport(str(path), 7)
    with open(path, "rb") as handle:
        items = list(read_wet(handle, str(path), 7, LIMITS, report))
    docs = [i for i in items if isinstance(i, Document)]
    rejects = [i for i in items if isinstance(i, Reject)]
    return docs, rejects, report


@pytest.mark.parametrize("name", ["whirlwind.warc.wet", "whirlwind.warc.wet.gz"])
def test_real_cc_record_provenance(shared_data, name):
    docs, rejects, report = read(shared_data / "wet" / name)
    assert rejects == [] and len(docs) == 1
    doc = docs[0]
    assert doc.url == "https://an.wikipedia.org/wiki/Escopete"
    assert doc.crawl == "CC-MAIN-2024-22" and doc.content_language == "spa"
    assert doc.record_id.startswith("<urn:uuid:") and doc.date.startswith("2024-05-")
    assert len(doc.lines) == 182 and doc.doc_id == "7:0" and doc.doc_key == (7 << 32)
    assert report.records == {"warcinfo": 1, "conversion": 1}


FIXTURES = {  # file -> (documents read, reject reasons)
    "cc_net_sample_semisynthetic.warc.wet": (0, ["corrupt_record"]),  # wrong Content-Length values
    "jeffharwell_CC-MAIN-2016-50_fixtures/appended_zip_fragment_unexpected_eof.wet.gz": (15, ["truncated_gzip"]),
    "jeffharwell_CC-MAIN-2016-50_fixtures/fragment1_incomplete_last.wet.gz": (1, ["content_length_mismatch"]),
    "jeffharwell_CC-MAIN-2016-50_fixtures/fragment1_asthma_incomplete_last.wet.gz": (0, ["content_length_mismatch", "corrupt_record"]),
    "jeffharwell_CC-MAIN-2016-50_fixtures/fragment2_no_header.wet.gz": (0, ["not_a_warc"]),
    "jeffharwell_CC-MAIN-2016-50_fixtures/file_and_wet_headers_only.wet.gz": (0, ["corrupt_record"]),
    "jeffharwell_CC-MAIN-2016-50_fixtures/corrupt_two_warcinfo.wet.gz": (5, []),
    "jeffharwell_CC-MAIN-2016-50_fixtures/corrupt_starts_with_conversion.wet.gz": (5, []),
}


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_corrupt_fixtures(shared_data, name):
    docs, rejects, report = read(shared_data / "wet" / name)
    expected_docs, expected_reasons = FIXTURES[name]
    assert len(docs) == expected_docs
    assert [r.reason for r in rejects] == expected_reasons
    assert all(r.message for r in rejects)
    assert report.documents == len(docs) and report.rejects == len(rejects)


def test_headers_read_by_name_not_position(tmp_path):
    body = b"first line\nsecond line\n"
    path = write_wet(tmp_path / "x.wet.gz", [
        warcinfo(), wet_record("http://a.example/", body, extra_headers=[("WARC-New-Header", "x")], reverse_headers=True)])
    docs, rejects, _ = read(path)
    assert rejects == [] and docs[0].url == "http://a.example/" and docs[0].lines == ["first line", "second line"]
    assert docs[0].crawl == "CC-MAIN-2099-01"


def test_empty_file(tmp_path):
    (tmp_path / "empty.wet.gz").write_bytes(b"")
    docs, rejects, _ = read(tmp_path / "empty.wet.gz")
    assert docs == [] and [r.reason for r in rejects] == ["empty_file"]


def test_invalid_utf8_replaced_below_ratio_rejected_above(tmp_path):
    few = b"caf\xe9 " + b"good text " * 100      # 1 bad byte in ~1000: replaced and counted
    many = b"\xff\xfe\xfa" * 50 + b" some text"  # mostly invalid: rejected
    path = write_wet(tmp_path / "u.wet.gz", [warcinfo(), wet_record("http://few/", few), wet_record("http://many/", many)])
    docs, rejects, report = read(path)
    assert [d.url for d in docs] == ["http://few/"] and docs[0].invalid_utf8_bytes == 1
    assert "\ufffd" in docs[0].lines[0]
    assert [(r.reason, r.url) for r in rejects] == [("invalid_utf8", "http://many/")]
    assert report.invalid_utf8_bytes == 1 and report.documents_with_invalid_utf8 == 1


def test_ten_megabyte_single_line_is_rejected_and_reading_goes_on(tmp_path):
    huge = b"x" * (10 * 1024 * 1024)
    path = write_wet(tmp_path / "h.wet.gz", [warcinfo(), wet_record("http://huge/", huge),
                                             wet_record("http://after/", b"still read\n")])
    docs, rejects, _ = read(path)
    assert [r.reason for r in rejects] == ["line_too_long"] and [d.url for d in docs] == ["http://after/"]


def test_wrong_content_length_in_the_middle(tmp_path):
    records = [warcinfo(), wet_record("http://short/", b"0123456789\n", content_length=5),
               wet_record("http://ok/", b"fine\n")]
    docs, rejects, _ = read(write_wet(tmp_path / "cl.wet", records, gzipped=False))
    assert [r.reason for r in rejects][:1] == ["content_length_mismatch"]
    assert "http://short/" not in [d.url for d in docs]


def test_truncated_gzip_keeps_the_records_before_the_break(shared_data, tmp_path):
    data = (shared_data / "wet" / "jeffharwell_CC-MAIN-2016-50_fixtures" / "fragment3.wet.gz").read_bytes()
    (tmp_path / "cut.wet.gz").write_bytes(data[: len(data) - 10])
    docs, rejects, _ = read(tmp_path / "cut.wet.gz")
    assert len(docs) == 4 and [r.reason for r in rejects] == ["truncated_gzip"]
