"""Diarizer: pyannote's SpeakerDiarization with packaged models on the real pyannote sample, the CAM++
embedding behind pyannote's interface, a local pipeline directory end to end, loader errors."""
import numpy as np
import pytest

from moshi_data.pipeline.audio.diarization_eval import der_components, rates
from moshi_data.pipeline.audio.diarize import (PACKAGED_SEGMENTATION, DiarizationModelError, Diarizer,
                                               segmentation_checkpoint, write_pipeline_dir)
from moshi_data.pipeline.audio.rttm import read_rttm
from moshi_data.pipeline.audio.transcribe import Transcriber
from moshi_data.pipeline.config import apply_overrides


def _sample_der(shared_data, turns) -> float:
    reference = read_rttm((shared_data / "diarization/pyannote_sample/sample.rttm").read_text())["sample"]
    return rates(der_components(reference, turns, 0.25))["der"]


def test_sample_der_below_target_and_deterministic(diarizer, sample_audio, shared_data, models_config):
    turns = diarizer.diarize(sample_audio)
    assert _sample_der(shared_data, turns) <= models_config["evaluation"]["targets"]["der_sample_collar_025"]
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert all(t.end > t.start for t in turns)
    assert diarizer.diarize(sample_audio) == turns


def test_offline_default_is_pyannotes_pipeline_with_packaged_models(diarizer):
    from pyannote.audio.pipelines import SpeakerDiarization

    from moshi_data.pipeline.audio.embedding import CAMPPlusEmbedding

    pipeline = diarizer.pipeline
    assert isinstance(pipeline, SpeakerDiarization) and pipeline.klustering == "AgglomerativeClustering"
    specifications = pipeline._segmentation.model.specifications
    assert specifications.powerset and specifications.powerset_max_classes == 2 and specifications.duration == 10.0
    assert isinstance(pipeline._embedding.model_, CAMPPlusEmbedding) and pipeline._embedding.dimension == 192
    assert pipeline.clustering.threshold == diarizer.settings["clustering"]["threshold"]


def test_campplus_follows_pyannotes_embedding_interface(diarizer, sample_audio):
    import torch

    embedding = diarizer.pipeline._embedding  # pyannote's PyannoteAudioPretrainedSpeakerEmbedding around CAM++
    waveforms = torch.from_numpy(sample_audio[: 3 * 160_000].reshape(3, 1, 160_000).copy())
    masks = torch.zeros(3, 589)
    masks[0], masks[1, :300] = 1.0, 1.0  # whole chunk, first half, nothing
    vectors = embedding(waveforms, masks=masks)
    assert vectors.shape == (3, 192) and np.isfinite(vectors[:2]).all() and np.isnan(vectors[2]).all()
    again = embedding(waveforms[:1], masks=masks[:1])
    assert np.allclose(again[0], vectors[0], atol=1e-5)  # per item: the batch does not change an embedding


def test_local_pipeline_directory_runs_end_to_end(models_config, diarizer, sample_audio, shared_data, tmp_path):
    directory = write_pipeline_dir(models_config["diarization"], tmp_path / "pipeline")
    assert sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()) == [
        "config.yaml", "embedding/pytorch_model.bin", "segmentation/pytorch_model.bin"]
    config = apply_overrides(models_config, [f"diarization.pipeline={directory}"])
    production = Diarizer(config)
    production.setup()  # pyannote's Pipeline.from_pretrained(<directory>), as for a downloaded hub pipeline
    turns = production.diarize(sample_audio)
    assert turns == diarizer.diarize(sample_audio)
    assert _sample_der(shared_data, turns) <= models_config["evaluation"]["targets"]["der_sample_collar_025"]
    assert production.model_versions["diarization"] == f"pyannote pipeline {directory}"


def test_packaged_segmentation_names_resolve_to_files_and_other_names_pass_through(tmp_path):
    from pathlib import Path

    for name in PACKAGED_SEGMENTATION:
        assert Path(segmentation_checkpoint(name)).is_file(), name
    assert segmentation_checkpoint(str(tmp_path / "model.bin")) == str(tmp_path / "model.bin")
    assert segmentation_checkpoint("pyannote/segmentation-3.0") == "pyannote/segmentation-3.0"


def test_silence_gives_no_turns(diarizer):
    assert diarizer.diarize(np.zeros(16000 * 3, np.float32)) == []
    assert diarizer.diarize(np.zeros(10, np.float32)) == []


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


def test_missing_segmentation_checkpoint_names_the_config_key(models_config, tmp_path):
    config = apply_overrides(models_config, [f"diarization.segmentation_model={tmp_path / 'missing.bin'}"])
    with pytest.raises(DiarizationModelError, match=r"diarization\.segmentation_model"):
        Diarizer(config).setup()


def test_missing_wav2vec2_model_names_the_config_key(models_config, tmp_path):
    with pytest.raises(RuntimeError, match=r"align\.wav2vec2_model"):
        Transcriber(models_config)._load_wav2vec2(str(tmp_path / "no-such-model"), "en")


def test_diarizer_is_picklable_before_setup_and_keeps_overlap(models_config, diarizer, sample_audio):
    import pickle

    assert pickle.loads(pickle.dumps(Diarizer(models_config)))._pipeline is None
    turns = diarizer.diarize(sample_audio)
    overlaps = [(a, b) for a in turns for b in turns
                if a.speaker < b.speaker and a.start < b.end and b.start < a.end]
    assert overlaps, "the sample has overlapped speech (18.05-18.59 s in sample.rttm); none was kept"
