"""Fixtures of the remote-worker tests: Beam's S3 options pointed at the suite's moto server."""
from __future__ import annotations

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from moshi_data.pipeline import storage


@pytest.fixture(scope="module")
def s3_args(s3_endpoint):
    """Beam pipeline flags that point its S3 filesystem (launcher and workers) at the test server."""
    return [f"--s3_endpoint_url={s3_endpoint}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
            "--s3_region_name=us-east-1"]


@pytest.fixture
def beam_s3(s3_client, s3_args, request):
    """The test module's ``BUCKET`` created, and Beam's S3 filesystem in this process set up for the server."""
    s3_client.create_bucket(Bucket=request.module.BUCKET)
    storage.configure(PipelineOptions(s3_args))
    return s3_args
