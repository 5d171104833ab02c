"""The Beam job end to end: output interface, counts, rejects, export, and byte-identical re-runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf

from moshi_data.beam_jobs import audio_shards, moshi_finetune_export
from moshi_data.pipeline.audio.rttm import read_rttm
from moshi_data.pipeline.config import load_config
from shard_samples import read_samples

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
TWO_WORKERS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


def read_rejects(output: Path) -> list[dict]:
    """Every reject line of a run, part after part."""
    return [json.loads(line) for part in sorted((output / "rejects").glob("part-*.jsonl"))
            for line in part.read_text().splitlines()]


def _files(folder: Path) -> dict[str, bytes]:
    """Every output file but report.html (it holds wall-clock RTF figures); stats.json without the
    run's ``started`` and ``wall_s``."""
    return {str(p.relative_to(folder)): _timeless(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != "report.html"}


def _timeless(path: Path) -> bytes:
    if path.name != "stats.json":
        return path.read_bytes()
    stats = json.loads(path.read_text())
    for key in ("started", "wall_s"):
        stats["run"].pop(key)
    return json.dumps(stats, sort_keys=True).encode()


def test_job_on_diarization_clips_interface_counts_and_export(shared_data, bad_inputs, small_tokenizer, tmp_path):
    clips = shared_data / "diarization"
    manifest = tmp_path / "manifest.jsonl"
    paths = [
        clips / "pyannote_sample" / "sample.wav",
        clips / "stereo_conversation" / "michaelandsickmichael.wav",
        clips / "pyannote_ami_debug" / "empty.wav",  # 1 s of silence
        bad_inputs["corrupt"], bad_inputs["zero_length"], bad_inputs["truncated"],
    ]
    manifest.write_text("".join(json.dumps({"path": str(p)}) + "\n" for p in paths))
    config = load_config("audio_shards", small_tokenizer)
    output = tmp_path / "out"
    stats = audio_shards.run(str(manifest), str(output), config, IN_PROCESS)

    assert stats == json.loads((output / "stats.json").read_text())
    run = stats["run"]  # provenance, as the text job writes it
    assert run["runner"] == "DirectRunner" and run["inputs"]["count"] == 6 and run["wall_s"] > 0
    assert run["config"]["text"]["tokenizer"] == config["text"]["tokenizer"] and run["version"].startswith("0.")
    recordings = stats["recordings"]
    assert recordings["in"] == 6
    assert recordings["kept"] == 2
    assert recordings["filtered"] == {"no_speech": 1}
    assert recordings["rejected"] == {"decode_error": 1, "empty_file": 1, "truncated": 1}
    rejects = read_rejects(output)
    assert len(rejects) == 4 + sum(stats["segments"]["filtered"].values()) == stats["rejects"]["lines"]
    assert [r["id"] for r in rejects if r["stage"] == "decode"] == sorted(r["id"] for r in rejects if r["stage"] == "decode")
    assert stats["recordings"]["annotated"] == 3 and len(stats["recordings"]["annotated_ids_sha256_sum"]) == 64
    assert all(r["reason"] and r["detail"] and r["stage"] in ("decode", "filter") for r in rejects)

    # annotations: every decoded recording, speaker ids as in the words file
    for recording_id in ("sample", "michaelandsickmichael", "empty"):
        words = json.loads((output / "annotations" / f"{recording_id}.words.json").read_text())
        rttm = (output / "annotations" / f"{recording_id}.rttm").read_text()
        assert all(set(w) == {"word", "start", "end", "speaker"} and w["start"] < w["end"] for w in words)
        turns = read_rttm(rttm).get(recording_id, [])
        assert {w["speaker"] for w in words} <= {t.speaker for t in turns}
        assert bool(words) == (recording_id != "empty")

    # shards: layout, two 24 kHz streams, text frames, meta
    shard_paths = sorted((output / "shards").glob("shard-*.tar"))
    assert [p.name for p in shard_paths] == ["shard-000000.tar"]
    assert stats["shards"] == {"count": 1, "bytes": shard_paths[0].stat().st_size, "first": "shard-000000.tar", "buckets": 1}
    samples = read_samples(*shard_paths)
    assert [s.key for s in samples] == ["michaelandsickmichael_00000", "sample_00000"]
    assert stats["segments"]["kept"] == len(samples)
    for sample in samples:
        meta = sample.meta
        assert sample.sample_rate == 24_000 and sample.audio.shape[0] == 2
        assert sample.text.dtype == np.int32 and sample.text.shape == (math.ceil(sample.audio.shape[1] / 24_000 * 12.5),)
        assert meta["main_speaker"] in meta["speakers"] and meta["source"].endswith(".wav")
        assert {"asr", "aligner", "diarization", "tokenizer"} <= set(meta["model_versions"])
        assert sample.codes is None and "mimi" not in meta["model_versions"]  # codes.enabled is off by default
        assert all(w["speaker"] in meta["speakers"] for w in sample.words)
    stereo = samples[0]
    assert stereo.meta["stream_mode"] == "channels" and stereo.meta["speakers"] == ["CHANNEL_0", "CHANNEL_1"]
    original, rate = sf.read(paths[1], dtype="float32", always_2d=True)
    main_channel = stereo.meta["speakers"].index(stereo.meta["main_speaker"])
    level = [float(np.abs(stereo.audio[i]).mean()) for i in range(2)]
    assert np.argmax(level) == int(np.argmax(np.abs(original).mean(axis=0)) != main_channel)  # channels kept, main first
    assert samples[1].meta["stream_mode"] == "mask"

    # moshi-finetune export of the same output
    exported = tmp_path / "moshi"
    assert moshi_finetune_export.run(str(output), str(exported), config, IN_PROCESS) == 2
    assert sorted(p.name for p in exported.iterdir()) == ["data_stereo", "index.jsonl"]  # index parts removed
    index = [json.loads(line) for line in (exported / "index.jsonl").read_text().splitlines()]
    assert [line["path"] for line in index] == [f"data_stereo/{s.key}.wav" for s in samples]
    for line, sample in zip(index, samples):
        wav, rate = sf.read(exported / line["path"], dtype="int16", always_2d=True)
        assert rate == 24_000 and wav.shape == (sample.audio.shape[1], 2)
        assert abs(line["duration"] - sample.audio.shape[1] / 24_000) < 1e-9
        assert np.array_equal(wav.T, np.round(sample.audio * 32768).clip(-32768, 32767).astype(np.int16))
        transcript = json.loads((exported / line["path"]).with_suffix(".json").read_text())
        assert len(transcript["alignments"]) == len(sample.words)
        for (word, (start, end), speaker), source in zip(transcript["alignments"], sample.words):
            assert (word, start, end) == (source["word"], source["start"], source["end"])
            assert speaker == ("SPEAKER_MAIN" if source["speaker"] == sample.meta["main_speaker"] else source["speaker"])


def test_job_is_byte_identical_across_worker_counts_and_after_a_killed_run(conversation_run, tmp_path):
    rerun = tmp_path / "rerun"  # what a killed earlier run could leave behind
    (rerun / "shards").mkdir(parents=True)
    (rerun / "shards" / "shard-000000.tar.tmp").write_bytes(b"partial")
    (rerun / "shards" / "shard-000042.tar").write_bytes(b"stale shard of another run")
    (rerun / "annotations").mkdir()
    (rerun / "annotations" / "gone.rttm").write_text("stale\n")
    (rerun / "rejects").mkdir()
    (rerun / "rejects" / "part-000099.jsonl").write_text("{}\n")
    (rerun / "rejects.jsonl").write_text("{}\n")  # the single rejects file of earlier versions
    audio_shards.run(str(conversation_run["inputs"]), str(rerun), conversation_run["config"], TWO_WORKERS)
    first_files, second_files = _files(conversation_run["output"]), _files(rerun)
    assert sorted(first_files) == sorted(second_files)
    assert first_files == second_files


def test_run_block_stays_the_same_when_the_checkout_changes_between_two_runs(monkeypatch):
    """The run block of stats.json names the package's git commit (``-dirty`` with edits): it is read once
    per process, so a file edited or a commit made while a session runs the job twice (the byte-identity
    test above) does not make the second run's stats.json differ."""
    from moshi_data.pipeline import command

    command.package_version()  # this process's version, as the job runs read it
    checkout = iter(["0123456789ab", "0123456789ab-dirty"])  # an edit between the two runs
    monkeypatch.setattr(command, "git_commit", lambda: next(checkout))
    first = command.run_provenance({"shards": {}}, ["a.wav"], "DirectRunner")
    second = command.run_provenance({"shards": {}}, ["a.wav"], "DirectRunner")
    assert first == second


def test_many_recordings_spread_over_shard_buckets_and_reject_parts(conversation, bad_inputs, conversation_run, tmp_path):
    """TestPipeline over 8 inputs with a small shard bound: samples spread over several bucket keys
    (each written by its own GroupByKey key), reject lines over several parts, and the summed tallies
    add up (in = kept + filtered + rejected; one reject line per rejected or filtered unit)."""
    import apache_beam as beam
    from apache_beam.testing.test_pipeline import TestPipeline
    from apache_beam.testing.util import assert_that, equal_to

    from moshi_data.pipeline.audio.decode import list_sources
    from moshi_data.pipeline.audio.outputs import bucket_of, shard_buckets
    from moshi_data.pipeline.config import apply_overrides

    inputs = tmp_path / "inputs"
    (inputs / "again").mkdir(parents=True)
    kept_ids = [f"talk{i}" for i in range(4)]
    for name in kept_ids:
        (inputs / f"{name}.wav").write_bytes(conversation["mono"].read_bytes())
    (inputs / "again" / "talk0.wav").write_bytes(conversation["mono"].read_bytes())  # duplicate id: a listing reject
    for name in ("silence", "corrupt", "zero_length"):
        (inputs / f"{name}.wav").write_bytes(bad_inputs[name].read_bytes())
    # the processor models of conversation_run are reused (same process, same stage config)
    config = apply_overrides(conversation_run["config"], ["shards.max_bytes=300000", "shards.rejects_recordings_per_part=2"])
    sources, listing_rejects = list_sources(str(inputs), list(config["ingest"]["extensions"]))
    assert len(sources) == 7 and [r["reason"] for r in listing_rejects] == ["duplicate_recording_id"]
    output = tmp_path / "out"
    with TestPipeline(runner="DirectRunner", options=beam.options.pipeline_options.PipelineOptions(IN_PROCESS)) as pipeline:
        outputs = audio_shards.build_pipeline(pipeline, sources, listing_rejects, config, str(output))
        counts = outputs["stats"] | beam.Map(lambda s: (s["recordings"]["in"], s["recordings"]["kept"],
                                                        sum(s["recordings"]["filtered"].values()),
                                                        sum(s["recordings"]["rejected"].values())))
        assert_that(counts, equal_to([(8, 4, 1, 3)]), label="RecordingsAddUp")
        assert_that(outputs["rejects"] | beam.Map(lambda part: part["name"]) | beam.combiners.Count.Globally()
                    | beam.Map(lambda n: n >= 2), equal_to([True]), label="SeveralRejectParts")
    stats = json.loads((output / "stats.json").read_text())
    rec, seg = stats["recordings"], stats["segments"]
    assert rec["rejected"] == {"decode_error": 1, "duplicate_recording_id": 1, "empty_file": 1} and rec["filtered"] == {"no_speech": 1}
    assert seg["in"] == seg["kept"] + sum(seg["filtered"].values()) and seg["kept"] >= 4

    stride = int(config["shards"]["bucket_stride"])
    shards = sorted((output / "shards").glob("shard-*.tar"))
    buckets = {int(p.stem.split("-")[1]) // stride for p in shards}
    assert stats["shards"]["buckets"] == shard_buckets(_sample_bytes(shards), 300_000)
    assert buckets == {bucket_of(rid, stats["shards"]["buckets"]) for rid in kept_ids} and len(buckets) >= 2
    assert stats["shards"]["count"] == len(shards) and stats["shards"]["first"] == shards[0].name
    samples = read_samples(*shards)
    assert sorted(s.key for s in samples) == sorted({s.key for s in samples}) and len(samples) == seg["samples"]
    for path in shards:  # each shard: one bucket's samples, in key order
        in_shard = read_samples(path)
        keys = [s.key for s in in_shard]
        assert keys == sorted(keys)
        assert {bucket_of(s.meta["recording_id"], stats["shards"]["buckets"]) for s in in_shard} == {
            int(path.stem.split("-")[1]) // stride}

    parts = sorted((output / "rejects").glob("part-*.jsonl"))
    rejects = read_rejects(output)
    assert len(parts) == stats["rejects"]["parts"] >= 2 and len(rejects) == stats["rejects"]["lines"]
    assert len(rejects) == sum(rec["rejected"].values()) + sum(rec["filtered"].values()) + sum(seg["filtered"].values())
    assert sorted(p.name for p in (output / "annotations").iterdir()) == sorted(
        f"{rid}.{ext}" for rid in [*kept_ids, "silence"] for ext in ("rttm", "words.json"))
    assert rec["annotated"] == 5


def _sample_bytes(shards: list[Path]) -> int:
    """Payload bytes of every sample of ``shards`` (what the bucket count is derived from)."""
    from moshi_data.pipeline.audio.outputs import record_bytes
    from moshi_data.pipeline.audio.shards import stream_records

    total = 0
    for path in shards:
        with open(path, "rb") as handle:
            total += sum(record_bytes(record) for record in stream_records(handle))
    return total


def test_models_load_once_per_process_whatever_the_thread_count(monkeypatch):
    """shared_processor: 8 harness threads asking at once get one processor, set up once, and one lock.
    (A counting stand-in replaces the processor's model loading: what is tested is the cache.)"""
    import threading
    import time

    loads = []

    class CountingProcessor(audio_shards.RecordingProcessor):
        def setup(self) -> None:
            loads.append(threading.get_ident())
            time.sleep(0.2)  # a slow load: the other threads arrive meanwhile

    monkeypatch.setattr(audio_shards, "RecordingProcessor", CountingProcessor)
    monkeypatch.setattr(audio_shards, "_PROCESSORS", {})
    config = load_config("audio_shards")
    got = []
    threads = [threading.Thread(target=lambda: got.append(audio_shards.shared_processor(config))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(loads) == 1 and len({id(processor) for processor, _ in got}) == 1 and len({id(lock) for _, lock in got}) == 1
    other_output = load_config("audio_shards", ["shards.max_bytes=1000", "report.samples=0"])
    assert audio_shards.shared_processor(other_output)[0] is got[0][0] and len(loads) == 1  # output settings share it
    audio_shards.shared_processor(load_config("audio_shards", ["filters.min_snr_db=9"]))
    assert len(loads) == 2


def test_re_export_over_an_earlier_export_leaves_only_this_exports_files(conversation_run, tmp_path):
    config = conversation_run["config"]
    clean, reused = tmp_path / "clean", tmp_path / "reused"
    moshi_finetune_export.run(str(conversation_run["output"]), str(clean), config, IN_PROCESS)
    audio = reused / config["export"]["audio_dir"]  # what an earlier export of other shards (or a killed one) left
    audio.mkdir(parents=True)
    for name in ("gone_00000.wav", "gone_00000.json", ".tmp-gone_00001.wav-0123"):
        (audio / name).write_bytes(b"earlier export")
    (reused / config["export"]["index"]).write_text('{"path": "data_stereo/gone_00000.wav", "duration": 1.0}\n')
    assert moshi_finetune_export.run(str(conversation_run["output"]), str(reused), config, IN_PROCESS) > 0
    assert _files(reused) == _files(clean)
