"""beam_jobs/stale_files.py (both jobs' stale-file removal): folders listed as name ranges in parallel,
each streamed (storage.iter_names), never as one whole listing; removal exact on local disk and S3."""
from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from moshi_data.beam_jobs.stale_files import RemoveStale, name_ranges
from moshi_data.pipeline import storage
from moshi_data.pipeline.config import ConfigError, load_config

BUCKET = "stale-files"
WRITTEN = [f"rec-{i:03d}.{ext}" for i in range(40) for ext in ("rttm", "words.json")]
# stale names before, between and after the written ones, a killed run's temporary, non-ASCII ids
STALE = ["0-first.rttm", "rec-007b.rttm", "rec-039.rttm.old", "zzz.words.json", ".tmp-rec-001.rttm-4f2a",
         "réunion.rttm", "会議.words.json"]


def test_name_ranges_cover_every_name_once():
    ranges = name_ranges("annotations", {"annotations": ["a", "c", "c", "f", "k"]})
    assert ranges == [("annotations", None, "c"), ("annotations", "c", "f"), ("annotations", "f", None)]
    assert name_ranges("rejects", {}) == [("rejects", None, None)]
    names = ["", "a", "b", "c", "d", "f", "g", "k", "z", "\uffff"]
    owners = [[r for r in ranges if (r[1] is None or n > r[1]) and (r[2] is None or n <= r[2])] for n in names]
    assert all(len(owner) == 1 for owner in owners)


@pytest.mark.parametrize("job", ["audio_shards", "text_corpus"])
def test_listing_ranges_come_from_each_job_config_checked(job):
    assert load_config(job)["stale_files"]["listing_ranges"] == 16
    assert load_config(job, ["stale_files.listing_ranges=4"])["stale_files"]["listing_ranges"] == 4
    with pytest.raises(ConfigError, match="stale_files.listing_ranges: expected an integer"):
        load_config(job, ["stale_files.listing_ranges=many"])
    with pytest.raises(ConfigError, match="did you mean 'stale_files.listing_ranges'"):
        load_config(job, ["stale_files.listing_range=4"])
    for wrong in ("0", "-3", "null"):  # the right type (null is accepted everywhere), refused where it is used
        ranges = load_config(job, [f"stale_files.listing_ranges={wrong}"])["stale_files"]["listing_ranges"]
        with pytest.raises(ConfigError, match=r"stale_files.listing_ranges: expected an integer >= 1"):
            RemoveStale("out", ["rejects"], ranges)


def _remove(output: str, ranges: int, options=None, deleted: int = len(STALE)) -> None:
    from apache_beam.testing.test_pipeline import TestPipeline

    with TestPipeline(runner="DirectRunner", options=options) as pipeline:
        removed = (pipeline | beam.Create([("annotations", name) for name in WRITTEN])
                   | RemoveStale(output, ["annotations", "rejects"], ranges=ranges))
        assert_that(removed, equal_to([deleted]))


def _no_whole_listing(monkeypatch):
    def refuse(folder):
        raise AssertionError(f"{folder} listed whole")
    monkeypatch.setattr(storage, "list_folder", refuse)


@pytest.mark.parametrize("ranges", [1, 4, 16])
def test_local_folder_listed_by_range_and_stale_files_removed_exactly(tmp_path, monkeypatch, ranges):
    folder = tmp_path / "annotations"
    folder.mkdir()
    for name in WRITTEN + STALE:
        (folder / name).write_text("x")
    (folder / "nested").mkdir()  # not a file of the folder: left alone
    assert sorted(storage.iter_names(str(folder), "rec-038.rttm", "rec-039.rttm")) == [
        "rec-038.words.json", "rec-039.rttm"]
    _no_whole_listing(monkeypatch)
    _remove(str(tmp_path), ranges)
    assert sorted(p.name for p in folder.iterdir()) == sorted(WRITTEN + ["nested"])


def test_a_folder_of_a_store_without_listing_from_a_name_is_listed_once(monkeypatch):
    listed = []

    def record(folder, after=None, upto=None):
        listed.append((folder, after, upto))
        return iter(())
    monkeypatch.setattr(storage, "iter_names", record)
    _remove("gs://bucket/out", 16, deleted=0)  # gs:// is matched whole by Beam: one listing per folder, not 16
    assert sorted(listed, key=repr) == [("gs://bucket/out/annotations", None, None), ("gs://bucket/out/rejects", None, None)]
    assert not storage.lists_from_name("gs://bucket/out") and storage.lists_from_name("s3://bucket/out")


@pytest.mark.timeout(120)
def test_s3_folder_listed_by_range_and_stale_files_removed_exactly(s3_client, s3_endpoint, monkeypatch):
    options = PipelineOptions([f"--s3_endpoint_url={s3_endpoint}", "--s3_access_key_id=testing",
                               "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"])
    storage.configure(options)
    s3_client.create_bucket(Bucket=BUCKET)
    for name in WRITTEN + STALE + ["nested/inside.rttm"]:
        s3_client.put_object(Bucket=BUCKET, Key=f"out/annotations/{name}", Body=b"x")
    s3_client.put_object(Bucket=BUCKET, Key="out/annotations-other/rec-000.rttm", Body=b"x")  # same prefix, other folder
    folder = f"s3://{BUCKET}/out/annotations"
    assert list(storage.iter_names(folder, "rec-038.rttm", "rec-039.rttm")) == ["rec-038.words.json", "rec-039.rttm"]
    assert sorted(storage.iter_names(folder)) == sorted(WRITTEN + STALE)
    _no_whole_listing(monkeypatch)
    _remove(f"s3://{BUCKET}/out", 4, options)
    keys = sorted(o["Key"] for o in s3_client.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"])
    assert keys == sorted([f"out/annotations/{name}" for name in WRITTEN]
                          + ["out/annotations/nested/inside.rttm", "out/annotations-other/rec-000.rttm"])
