"""Trainer fixtures: small shards from real diarization clips, and one 50-step tiny training run.

The shards come from :mod:`trainer.reference_shards`: real audio of three clips of
``../shared/data/diarization`` (first 8 s each, resampled to 24 kHz), split into main/other streams
from the clip's reference RTTM; the text stream holds *reference-free stand-in words* (one every
0.4 s inside the main speaker's turns, hashed to token ids) placed on frames with the audio job's
``pipeline/audio/text_frames.py`` rule; codes are Mimi codes from ``pipeline.audio.codec.encode_streams``.
Mimi has no weights offline, so it is the seeded randomly-initialised Mimi of the real
architecture (a stand-in the codec logs as such). The last shard (dev00) is the held-out eval shard.
"""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from moshi_data.pipeline.audio.codec import shared_codec
from moshi_data.trainer.reference_shards import build_reference_shards
from moshi_data.trainer.train import main as train_main
from moshi_data.trainer.train import resolve_config
from trainer_helpers import TINY_STEPS, text_args


@pytest.fixture(scope="session")
def tiny_config() -> dict:
    return resolve_config("trainer", "tiny", [])


@contextmanager
def one_thread():
    """Mimi on one thread: on 2 shared cores a second thread mostly spins."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def codec(tiny_config):
    with one_thread():
        return shared_codec(tiny_config["codec"])


@pytest.fixture(scope="session")
def clips(shared_data) -> list[tuple[Path, Path, str]]:
    base = shared_data / "diarization"
    return [
        (base / "pyannote_sample/sample.wav", base / "pyannote_sample/sample.rttm", "sample"),
        (base / "pyannote_ami_debug/trn01.wav", base / "pyannote_ami_debug/debug.train.rttm", "trn01"),
        (base / "pyannote_ami_debug/dev00.wav", base / "pyannote_ami_debug/debug.development.rttm", "dev00"),
    ]


@pytest.fixture(scope="session")
def trainer_shards(tmp_path_factory, clips, codec) -> Path:
    directory = tmp_path_factory.mktemp("trainer-shards")
    with one_thread():
        build_reference_shards(clips, directory, codec, segment_seconds=8.0, max_seconds=8.0)
    return directory


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, trainer_shards) -> Path:
    """One uninterrupted 50-step tiny run with 2 data workers (checkpoints at 25 and 50)."""
    output = tmp_path_factory.mktemp("tiny-run") / "run"
    train_main(["--shards", str(trainer_shards), "--output", str(output), "--steps", str(TINY_STEPS),
                "--preset", "tiny", "--set", "data.num_workers=2"])
    return output


@pytest.fixture
def copy_run(tmp_path):
    def copy(run: Path) -> Path:
        target = tmp_path / "run"
        shutil.copytree(run, target)
        return target

    return copy


@pytest.fixture(scope="session")
def spm_tokenizer(tmp_path_factory) -> Path:
    """A small SentencePiece model trained (for real) with the audio job's tokenizer trainer."""
    from moshi_data.classifiers.tokenizer import train_tokenizer
    from moshi_data.pipeline.config import load_config

    prefix = tmp_path_factory.mktemp("tokenizer") / "spm"
    train_tokenizer(load_config("audio_shards", [
        f"tokenizer.output={prefix}", "tokenizer.vocab_size=1000", "tokenizer.input_sentence_size=20000",
        "tokenizer.exclude=[multilingual, scientific, news, educational, stackexchange, health_medical, "
        "forum_conversation, legal_government]",
    ]))
    return Path(f"{prefix}.model")


@pytest.fixture(scope="session")
def text_corpus(shared_data, tmp_path_factory) -> Path:
    """The text-corpus job's output on ../shared/data/wet (as its tests run it): documents/*.parquet."""
    from moshi_data.beam_jobs import text_corpus as job

    output = tmp_path_factory.mktemp("text-corpus")
    job.run(str(shared_data / "wet" / "**" / "*.wet*"), str(output),
            overrides=["language.languages=[en,ru,zh,es,an]", "input.docs_per_chunk=4", "input.files_per_group=100",
                       "quality.filter.max_rand_score=1.0"],
            beam_args=["--runner=DirectRunner", "--direct_running_mode=in_memory", "--direct_num_workers=1"])
    return output


@pytest.fixture(scope="session")
def mixed_run(tmp_path_factory, trainer_shards, text_corpus, spm_tokenizer) -> Path:
    """50 tiny steps, half of them text-only batches from the text-corpus output (text read in a worker)."""
    output = tmp_path_factory.mktemp("mixed-run") / "run"
    train_main(["--shards", str(trainer_shards), "--output", str(output), "--steps", str(TINY_STEPS),
                "--preset", "tiny", *text_args(text_corpus, spm_tokenizer), "--set", "text.num_workers=1"])
    return output
