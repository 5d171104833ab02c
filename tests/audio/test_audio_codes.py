"""codes.npy written by the audio job (codes.enabled) equals what the trainer encodes on the fly."""
from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import torch

from moshi_data.pipeline.audio.shards import decode_sample
from moshi_data.pipeline.config import REPO_ROOT


def _raw_records(path):
    from webdataset.tariterators import tarfile_samples

    return list(tarfile_samples([{"url": str(path)}]))


def _write_raw(path, records) -> None:
    import webdataset as wds

    with open(path, "wb") as handle:
        writer = wds.TarWriter(handle, mtime=0.0)
        for record in records:
            writer.write({k: v for k, v in record.items() if k != "__url__"})
        writer.close()


def _trainer_tokens(shards, config):
    from moshi_data.trainer.data import ShardStream

    return {item["key"]: item["tokens"] for item in ShardStream([str(s) for s in shards], config, train=False)}


def test_job_codes_match_text_frames_and_trainer_on_the_fly(conversation_run, tmp_path):
    from moshi_data.trainer.train import resolve_config

    shards = sorted((conversation_run["output"] / "shards").glob("shard-*.tar"))
    records = [record for shard in shards for record in _raw_records(shard)]
    assert len(records) == 2  # mono and stereo conversations, one segment each
    trainer_config = resolve_config("trainer", "tiny", ["data.window_seconds=60"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in DataLoader workers; Mimi itself runs on codec.threads whatever this is
    try:
        # the trainer's data path (trainer.data -> pipeline.audio.codec.encode_streams on the decoded FLAC):
        # the job's shard with codes.npy vs the same records without it (encoded on the fly)
        _write_raw(tmp_path / "shard-000000.tar", [{k: v for k, v in r.items() if k != "codes.npy"} for r in records])
        with_codes = _trainer_tokens(shards, trainer_config)
        on_the_fly = _trainer_tokens([tmp_path / "shard-000000.tar"], trainer_config)
    finally:
        torch.set_num_threads(threads)
    assert sorted(with_codes) == sorted(on_the_fly) == sorted(r["__key__"] for r in records)
    for record in records:
        sample = decode_sample(record)
        stored = np.load(io.BytesIO(record["codes.npy"]), allow_pickle=False)
        assert stored.dtype == np.int16 and stored.shape == (16, sample.text.shape[0])
        assert stored.shape[1] == -(-sample.audio.shape[1] // 1920)  # ceil(samples / 1920) frames
        # text_all.npy (single-stream training): every speaker's words, at least main's word tokens
        assert sample.text_all.shape == sample.text.shape and (sample.text_all > 3).sum() >= (sample.text > 3).sum()
        assert len(np.unique(stored[:8])) > 20  # codes vary with the audio
        assert "RANDOM STAND-IN" in sample.meta["model_versions"]["mimi"]  # offline: no hub weights
        assert (np.asarray(with_codes[record["__key__"]])[1:, : stored.shape[1]] == stored).all()
    for key, tokens in with_codes.items():
        assert (tokens[1:] >= 0).any() and (tokens == on_the_fly[key]).all()


def test_job_imports_no_codec_when_codes_are_off():
    """The job and the recording stages import neither the codec nor moshi unless codes are enabled."""
    probe = ("import sys, moshi_data.beam_jobs.audio_shards, moshi_data.pipeline.audio.recording as r; "
             "from moshi_data.pipeline.config import load_config; "
             "assert r.codec_settings(load_config('audio_shards')) is None; "
             "print(sorted(m for m in sys.modules if m == 'moshi' or m.startswith(('moshi.', 'moshi_data.trainer', 'moshi_data.pipeline.audio.codec'))))")
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
