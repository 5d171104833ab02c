"""The Beam job end to end: output interface, counts, rejects, export, and byte-identical re-runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import soundfile as sf

from moshi_data.beam_jobs import audio_shards, moshi_finetune_export
from moshi_data.pipeline.audio.rttm import read_rttm
from moshi_data.pipeline.audio.shards import iter_shard
from moshi_data.pipeline.config import load_config

IN_PROCESS = ["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"]
TWO_WORKERS = ["--runner=DirectRunner", "--direct_running_mode=multi_processing", "--direct_num_workers=2"]


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
    rejects = [json.loads(line) for line in (output / "rejects.jsonl").read_text().splitlines()]
    assert len(rejects) == 4 + sum(stats["segments"]["filtered"].values())
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
    assert [p.name for p in shard_paths] == stats["shards"] == ["shard-000000.tar"]
    samples = [s for p in shard_paths for s in iter_shard(p)]
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
    audio_shards.run(str(conversation_run["inputs"]), str(rerun), conversation_run["config"], TWO_WORKERS)
    first_files, second_files = _files(conversation_run["output"]), _files(rerun)
    assert sorted(first_files) == sorted(second_files)
    assert first_files == second_files
