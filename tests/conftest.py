"""Shared pytest fixtures: the ../shared data folder must exist (CI places it beside the clone)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MOSHI_DATA_SHARED", REPO_ROOT.parent / "shared")) / "data"

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data; fails (never skips) when it is missing."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data folder missing: {SHARED_DATA} (CI must place ../shared beside the repo)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


S3_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture
def fake_aws_env(monkeypatch):
    """Test credentials and region for moto's in-process ``mock_aws`` (no endpoint override)."""
    for key, value in S3_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-compatible HTTP server (moto) on 127.0.0.1, for the whole session."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_client(s3_endpoint, monkeypatch):
    """boto3 client of the test server; the environment points worker processes at it too."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    for key, value in S3_TEST_ENV.items():
        monkeypatch.setenv(key, value)
    return boto3.client("s3", endpoint_url=s3_endpoint, region_name=S3_TEST_ENV["AWS_DEFAULT_REGION"],
                        aws_access_key_id="testing", aws_secret_access_key="testing")


@pytest.fixture(scope="session")
def text_run(shared_data, tmp_path_factory):
    """A small text run for the inspect, report and doc-snippet tests: 697 real CC documents (dolma
    JSONL, English and others, with quality scores) plus the corrupt WET fixtures (rejects)."""
    from moshi_data.beam_jobs import text_corpus

    inputs = ",".join([str(shared_data / "wet" / "cc_text_jsonl" / "dolma_CC-MAIN-20190717121559-20190717143559-00140.jsonl.gz"),
                       str(shared_data / "wet" / "jeffharwell_CC-MAIN-2016-50_fixtures" / "*.wet*")])
    output = tmp_path_factory.mktemp("text_run")
    in_process = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
    result = text_corpus.run(inputs, str(output), overrides=["input.docs_per_chunk=50"], beam_args=in_process)
    return output, result["stats"]
