"""The trainer on s3 through Beam's S3 options (``--s3_endpoint_url``, region, credentials), against
the suite's moto server: one boto3 client per process, the options reach the DataLoader workers."""
from __future__ import annotations

import json


from moshi_data.trainer.data import S3_OPTIONS
from moshi_data.trainer.text_data import list_text_files
from moshi_data.trainer.train import main as train_main
from moshi_data.trainer.train import read_jsonl
from trainer_helpers import text_args

BUCKET = "trainer"


def test_s3_options_are_beams():
    """The trainer takes Beam's S3 options by their Beam names (the ones the Beam jobs take)."""
    import argparse

    from apache_beam.options.pipeline_options import S3Options

    parser = argparse.ArgumentParser()
    S3Options._add_argparse_args(parser)  # noqa: SLF001 - how Beam builds its own parser
    assert set(S3_OPTIONS) == {action.dest for action in parser._actions if action.dest.startswith("s3_")}  # noqa: SLF001


def test_trainer_reads_s3_with_beam_s3_options(s3_endpoint, tmp_path, trainer_shards, text_corpus, spm_tokenizer,
                                               monkeypatch):
    """Shards and text on s3, the environment pointing at a dead endpoint without credentials: only
    the --s3_* options reach the server, in the training process (one client) and in the text worker."""
    import boto3
    from apache_beam.io.aws.clients.s3 import boto3_client

    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    for path in sorted(trainer_shards.glob("shard-*.tar")):
        client.upload_file(str(path), BUCKET, f"audio/{path.name}")
    for path in list_text_files(str(text_corpus), "*.parquet"):
        client.upload_file(path, BUCKET, f"text/documents/{path.rsplit('/', 1)[-1]}")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    built = []
    original = boto3_client.Client.__init__

    def counting(self, options):
        built.append(dict(options))
        original(self, options)

    monkeypatch.setattr(boto3_client.Client, "__init__", counting)
    output = tmp_path / "run"
    s3_args = [f"--s3_endpoint_url={s3_endpoint}", "--s3_access_key_id=testing", "--s3_secret_access_key=testing",
               "--s3_region_name=us-east-1"]
    assert train_main(["--shards", f"s3://{BUCKET}/audio", "--output", str(output), "--steps", "4", "--preset", "tiny",
                       *text_args(f"s3://{BUCKET}/text", spm_tokenizer), "--set", "text.num_workers=1",
                       "--set", "train.eval_every=4", *s3_args]) == 0
    report = json.loads((output / "report.json").read_text())
    assert report["finished"] and report["text_files"] == len(list_text_files(str(text_corpus), "*.parquet"))
    assert report["train_shards"] == 2 and report["eval_shards"] == 1
    [evals] = read_jsonl(output / "eval.jsonl")
    assert evals["eval_batches"] == 1 and evals["eval_text_batches"] >= 1
    assert {line["batch"] for line in read_jsonl(output / "log.jsonl")} == {"audio", "text"}
    assert built == [{"s3_endpoint_url": s3_endpoint, "s3_access_key_id": "testing",
                      "s3_secret_access_key": "testing", "s3_region_name": "us-east-1"}]  # one client here
