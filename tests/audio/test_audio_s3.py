"""Ingest from and outputs to S3 through a real S3-compatible HTTP server (moto) on 127.0.0.1."""
from __future__ import annotations

import json

import pytest

from moshi_data.pipeline.audio.decode import AudioRejected, decode, list_sources
from moshi_data.pipeline.audio.outputs import write_bucket
from moshi_data.pipeline.audio.shards import stream_records
from moshi_data.pipeline.storage import open_read, write_bytes_atomic
from moshi_data.pipeline.config import load_config
from shard_samples import read_samples

BUCKET = "audio-test"


@pytest.mark.timeout(120)
def test_s3_manifest_glob_decode_and_atomic_outputs(s3_endpoint, s3_client, bad_inputs, tmp_path):
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import PipelineOptions

    FileSystems.set_options(PipelineOptions([f"--s3_endpoint_url={s3_endpoint}", "--s3_access_key_id=testing",
                                             "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"]))
    client = s3_client  # its fixture also exports the endpoint and credentials for worker processes
    client.create_bucket(Bucket=BUCKET)
    client.upload_file(str(bad_inputs["flac"]), BUCKET, "audio/talk.flac")
    client.upload_file(str(bad_inputs["corrupt"]), BUCKET, "audio/broken.wav")
    manifest = [{"path": "audio/talk.flac", "speakers": ["a", "b"]}, {"path": f"s3://{BUCKET}/audio/broken.wav", "id": "b"}]
    client.put_object(Bucket=BUCKET, Key="lists/in.jsonl", Body="".join(json.dumps(m) + "\n" for m in manifest).encode())
    ingest = load_config("audio_shards")["ingest"]

    sources, rejects = list_sources(f"s3://{BUCKET}/lists/in.jsonl", ingest["extensions"])
    assert rejects == [] and [(s.recording_id, s.path) for s in sources] == [
        ("b", f"s3://{BUCKET}/audio/broken.wav"), ("talk", f"s3://{BUCKET}/lists/audio/talk.flac")]
    globbed, _ = list_sources(f"s3://{BUCKET}/audio/*", ingest["extensions"])
    assert [s.recording_id for s in globbed] == ["broken", "talk"]
    audio = decode(f"s3://{BUCKET}/audio/talk.flac", ingest)
    assert audio.audio24.shape == (1, 60_000)
    with pytest.raises(AudioRejected) as error:
        decode(f"s3://{BUCKET}/audio/broken.wav", ingest)
    assert error.value.reason == "decode_error"
    with pytest.raises(AudioRejected) as error:  # manifest paths are relative to the manifest's folder
        decode(f"s3://{BUCKET}/lists/audio/talk.flac", ingest)
    assert error.value.reason == "missing_file"

    output = f"s3://{BUCKET}/out"
    write_bytes_atomic(f"{output}/stats.json", b"{}\n")
    from moshi_data.pipeline.audio.shards import Sample, encode_sample
    import numpy as np

    records = [(f"k{i}", encode_sample(Sample(f"k{i}", np.zeros((2, 2400), np.float32), [], np.full(1, 3, np.int32), {"i": i, "main_speaker": "A"})))
               for i in (1, 0)]
    [(name, size)] = write_bucket(output, 0, records, max_bytes=10**6, stride=1000)
    assert name == "shard-000000.tar"
    local = tmp_path / "shard.tar"
    local.write_bytes(client.get_object(Bucket=BUCKET, Key="out/shards/shard-000000.tar")["Body"].read())
    assert [s.key for s in read_samples(local)] == ["k0", "k1"] and local.stat().st_size == size
    with open_read(f"{output}/shards/shard-000000.tar") as stream:  # what the export and the report read
        assert [record["__key__"] for record in stream_records(stream)] == ["k0", "k1"]
    from moshi_data.beam_jobs import moshi_finetune_export  # the export streams the remote shard the same way

    exported = tmp_path / "export"
    shard = f"{output}/shards/shard-000000.tar"
    assert sorted(moshi_finetune_export.export_shard(shard, str(exported), "data_stereo", "SPEAKER_MAIN")) == [
        ("data_stereo", f"k{i}.{ext}") for i in (0, 1) for ext in ("json", "wav")]
    moshi_finetune_export.concatenate_index(str(exported), [shard], "index.jsonl")
    index = [json.loads(line) for line in (exported / "index.jsonl").read_text().splitlines()]
    assert [line["path"] for line in index] == ["data_stereo/k0.wav", "data_stereo/k1.wav"]
    assert sorted(p.name for p in exported.iterdir()) == ["data_stereo", "index.jsonl"]

    # files of an earlier run that this run did not write go, by the join of the pipeline
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from moshi_data.beam_jobs.stale_files import RemoveStale

    client.put_object(Bucket=BUCKET, Key="out/shards/shard-000009.tar", Body=b"stale")
    client.put_object(Bucket=BUCKET, Key="out/rejects/part-000003.jsonl", Body=b"{}\n")
    with TestPipeline(runner="DirectRunner", options=FileSystems._pipeline_options) as pipeline:
        removed = (pipeline | beam.Create([("shards", "shard-000000.tar")])
                   | RemoveStale(output, ["shards", "annotations", "rejects"], ranges=4))
        assert_that(removed, equal_to([2]))
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"])
    assert keys == ["out/shards/shard-000000.tar", "out/stats.json"]
