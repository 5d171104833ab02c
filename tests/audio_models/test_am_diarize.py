"""Diarizer: offline default on the real pyannote sample, clustering bounds, production loader errors."""
import numpy as np
import pytest

from pipeline.audio.diarize import DiarizationModelError, Diarizer, cluster_embeddings
from pipeline.audio.evaluate import diarization_scores
from pipeline.audio.rttm import read_rttm
from pipeline.audio.transcribe import Transcriber
from pipeline.config import apply_overrides


def test_sample_der_below_target_and_deterministic(diarizer, sample_audio, shared_data, models_config):
    reference = read_rttm((shared_data / "diarization/pyannote_sample/sample.rttm").read_text())["sample"]
    turns = diarizer.diarize(sample_audio)
    scores = diarization_scores(reference, turns, [0.25])["collar_0.25"]
    assert scores["der"] <= models_config["evaluation"]["targets"]["der_sample_collar_025"], scores
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert all(t.end > t.start for t in turns)
    assert diarizer.diarize(sample_audio) == turns


def test_silence_gives_no_turns(diarizer):
    assert diarizer.diarize(np.zeros(16000 * 3, np.float32)) == []
    assert diarizer.diarize(np.zeros(10, np.float32)) == []


def test_clustering_respects_bounds():
    rng = np.random.default_rng(0)
    centers = np.eye(4)[:2]
    points = np.concatenate([c + 0.05 * rng.standard_normal((10, 4)) for c in centers])
    points /= np.linalg.norm(points, axis=1, keepdims=True)
    assert len(set(cluster_embeddings(points, "ward", 1.0, 1, 8))) == 2
    assert len(set(cluster_embeddings(points, "ward", 1.0, 1, 1))) == 1
    assert len(set(cluster_embeddings(points, "ward", 100.0, 3, 8))) == 3
    assert len(set(cluster_embeddings(points, "ward", 1.0, 1, 8, num_clusters=4))) == 4


def test_named_pipeline_that_cannot_be_downloaded_names_the_config_key(models_config, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = apply_overrides(models_config, ["diarization.pipeline=pyannote/speaker-diarization-community-1"])
    with pytest.raises(DiarizationModelError, match=r"diarization\.pipeline") as error:
        Diarizer(config).setup()
    assert "speaker-diarization-community-1" in str(error.value)


def test_missing_local_pipeline_directory_names_the_config_key(models_config, tmp_path):
    config = apply_overrides(models_config, [f"diarization.pipeline={tmp_path / 'no-such-pipeline'}"])
    with pytest.raises(DiarizationModelError, match=r"diarization\.pipeline"):
        Diarizer(config).setup()


def test_missing_wav2vec2_model_names_the_config_key(models_config, tmp_path):
    with pytest.raises(RuntimeError, match=r"align\.wav2vec2_model"):
        Transcriber(models_config)._load_wav2vec2(str(tmp_path / "no-such-model"), "en")


def test_diarizer_is_picklable_before_setup_and_keeps_overlap(models_config, diarizer, sample_audio):
    import pickle

    assert pickle.loads(pickle.dumps(Diarizer(models_config)))._segmentation is None
    turns = diarizer.diarize(sample_audio)
    overlaps = [(a, b) for a in turns for b in turns
                if a.speaker < b.speaker and a.start < b.end and b.start < a.end]
    assert overlaps, "the sample has overlapped speech (18.05-18.59 s in sample.rttm); none was kept"
