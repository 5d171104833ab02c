"""Diarizer: offline default on the real pyannote sample, both package-shipped segmentation models,
powerset probabilities, clustering bounds, production loader errors."""
import numpy as np
import pytest

from moshi_data.pipeline.audio.diarize import (PACKAGED_SEGMENTATION, DiarizationModelError, Diarizer, cluster_embeddings,
                                    segmentation_checkpoint, speaker_probabilities)
from moshi_data.pipeline.audio.evaluate import diarization_scores
from moshi_data.pipeline.audio.rttm import read_rttm
from moshi_data.pipeline.audio.transcribe import Transcriber
from moshi_data.pipeline.config import apply_overrides


def test_sample_der_below_target_and_deterministic(diarizer, sample_audio, shared_data, models_config):
    reference = read_rttm((shared_data / "diarization/pyannote_sample/sample.rttm").read_text())["sample"]
    turns = diarizer.diarize(sample_audio)
    scores = diarization_scores(reference, turns, [0.25])["collar_0.25"]
    assert scores["der"] <= models_config["evaluation"]["targets"]["der_sample_collar_025"], scores
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert all(t.end > t.start for t in turns)
    assert diarizer.diarize(sample_audio) == turns


def test_whisperx_segmentation_model_still_meets_the_sample_target(models_config, sample_audio, shared_data):
    config = apply_overrides(models_config, ["diarization.segmentation_model=whisperx-vad",
                                             "diarization.activity_onset=0.5", "diarization.activity_offset=0.363"])
    diarizer = Diarizer(config)
    diarizer.setup()
    assert diarizer.window_seconds() == 5.0  # null segmentation_window = the model's own window
    reference = read_rttm((shared_data / "diarization/pyannote_sample/sample.rttm").read_text())["sample"]
    scores = diarization_scores(reference, diarizer.diarize(sample_audio), [0.25])["collar_0.25"]
    assert scores["der"] <= models_config["evaluation"]["targets"]["der_sample_collar_025"], scores


def test_default_segmentation_is_the_packaged_powerset_model(diarizer):
    specifications = diarizer._segmentation.model.specifications
    assert diarizer.settings["segmentation_model"] == "segmentation-3.0"
    assert specifications.powerset and specifications.powerset_max_classes == 2
    assert diarizer.window_seconds() == 10.0


def test_packaged_segmentation_names_resolve_to_files_and_other_names_pass_through(tmp_path):
    from pathlib import Path

    for name in PACKAGED_SEGMENTATION:
        assert Path(segmentation_checkpoint(name)).is_file(), name
    assert segmentation_checkpoint(str(tmp_path / "model.bin")) == str(tmp_path / "model.bin")
    assert segmentation_checkpoint("pyannote/segmentation-3.0") == "pyannote/segmentation-3.0"


def test_powerset_probabilities_sum_the_classes_holding_each_speaker():
    from types import SimpleNamespace

    # pyannote's powerset order for 3 speakers, at most 2 at once: {}, {0}, {1}, {2}, {0,1}, {0,2}, {1,2}
    specifications = SimpleNamespace(classes=["a", "b", "c"], powerset_max_classes=2)
    probabilities = np.array([[0.1, 0.2, 0.0, 0.0, 0.6, 0.0, 0.1],   # mostly speakers 0 and 1 together
                              [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])  # silence
    speakers = speaker_probabilities(np.log(probabilities + 1e-12), specifications)
    assert np.allclose(speakers, [[0.8, 0.7, 0.1], [0.0, 0.0, 0.0]], atol=1e-6)


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
