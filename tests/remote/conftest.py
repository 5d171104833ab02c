"""Fixtures of the remote-worker tests: Beam's S3 options pointed at the suite's moto server."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def s3_args(s3_endpoint):
    """Beam pipeline flags that point its S3 filesystem (launcher and workers) at the test server."""
    return [f"--s3_endpoint_url={s3_endpoint}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
            "--s3_region_name=us-east-1"]
