"""Diarizer: pyannote's SpeakerDiarization with packaged models on the real pyannote sample, the CAM++
embedding behind pyannote's interface, a local pipeline directory end to end, loader errors."""
import sys

import numpy as np
import pytest

from moshi_data.pipeline.audio.diarization_eval import der_components, rates
from moshi_data.pipeline.audio.diarize import (PACKAGED_SEGMENTATION, DiarizationModelError, Diarizer,
                                               segmentation_checkpoint, write_pipeline_dir)
from moshi_data.pipeline.audio.rttm import read_rttm
from moshi_data.pipeline.audio.transcribe import Transcriber
from moshi_data.pipeline.command import describe
from moshi_data.pipeline.config import ConfigError, apply_overrides


def _sample_der(shared_data, turns) -> float:
    reference = read_rttm((shared_data / "diarization/pyannote_sample/sample.rttm").read_text())["sample"]
    return rates(der_components(reference, turns, 0.25))["der"]


def test_sample_der_below_target_and_deterministic(diarizer, sample_audio, sample_turns, shared_data, models_config):
    turns = sample_turns
    assert _sample_der(shared_data, turns) <= models_config["evaluation"]["targets"]["der_sample_collar_025"]
    assert {t.speaker for t in turns} == {"SPEAKER_00", "SPEAKER_01"}
    assert all(t.end > t.start for t in turns)
    assert diarizer.diarize(sample_audio) == turns


def test_offline_default_is_pyannotes_pipeline_with_packaged_models(diarizer):
    from pyannote.audio.pipelines import SpeakerDiarization

    from moshi_data.pipeline.audio.embedding import FusedEmbedding

    pipeline = diarizer.pipeline
    assert isinstance(pipeline, SpeakerDiarization) and pipeline.klustering == "AgglomerativeClustering"
    specifications = pipeline._segmentation.model.specifications
    assert specifications.powerset and specifications.powerset_max_classes == 2 and specifications.duration == 10.0
    assert isinstance(pipeline._embedding.model_, FusedEmbedding) and pipeline._embedding.dimension == 192 + 256
    assert pipeline.clustering.threshold == diarizer.settings["clustering"]["threshold"]


def _chunks_and_masks(sample_audio):
    """4 items as pyannote batches them: chunks 0, 1, 2, 2 of the sample; whole, first half, nothing, whole."""
    import torch

    chunks = sample_audio[: 3 * 160_000].reshape(3, 1, 160_000)
    waveforms = torch.from_numpy(np.concatenate([chunks, chunks[2:]]).copy())
    masks = torch.zeros(4, 589)
    masks[0], masks[1, :300], masks[3] = 1.0, 1.0, 1.0
    return waveforms, masks


def _check_embedding_interface(embedding, sample_audio, dimension):
    waveforms, masks = _chunks_and_masks(sample_audio)
    vectors = embedding(waveforms, masks=masks)
    assert vectors.shape == (4, dimension) and np.isnan(vectors[2]).all()
    assert np.isfinite(vectors[[0, 1, 3]]).all() and not np.allclose(vectors[0], vectors[3], atol=1e-2)
    for index in (0, 1, 3):  # per item: the batch (and who shares it) does not change an embedding
        alone = embedding(waveforms[index: index + 1], masks=masks[index: index + 1])
        assert np.allclose(alone[0], vectors[index], atol=1e-5), index
    return vectors


def _packaged_embedding(models_config, name):
    """A packaged embedding model with the config's diarization settings, as the offline pipeline builds it."""
    from moshi_data.pipeline.audio.diarize import embedding_model

    settings = models_config["diarization"]
    return embedding_model(name, settings["fusion_weight"], settings["min_active_frames"])


def test_campplus_follows_pyannotes_embedding_interface(sample_audio, models_config):
    from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding

    # pyannote's PyannoteAudioPretrainedSpeakerEmbedding around CAM++; items 0 and 3 (same frame count) share a forward
    _check_embedding_interface(PretrainedSpeakerEmbedding(_packaged_embedding(models_config, "campplus")), sample_audio, 192)


def test_ge2e_follows_pyannotes_interface_and_embeds_as_resemblyzer_does(sample_audio, models_config):
    from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding
    from resemblyzer import VoiceEncoder, normalize_volume

    vectors = _check_embedding_interface(PretrainedSpeakerEmbedding(_packaged_embedding(models_config, "ge2e")), sample_audio, 256)
    chunk = sample_audio[:160_000]  # whole chunk active: resemblyzer's own utterance embedding at -30 dBFS
    expected = VoiceEncoder("cpu", verbose=False).embed_utterance(normalize_volume(chunk, -30, increase_only=True))
    assert np.allclose(vectors[0], expected, atol=1e-4)


def test_fused_embedding_is_both_unit_vectors_side_by_side(diarizer, sample_audio, models_config, tmp_path):
    from pyannote.audio import Model
    from pyannote.audio.pipelines.speaker_verification import PretrainedSpeakerEmbedding

    import torch

    from moshi_data.pipeline.audio.embedding import fuse, reweight_fused, save_checkpoint

    model = diarizer.pipeline._embedding.model_  # the offline default
    waveforms, masks = _chunks_and_masks(sample_audio)
    fused = diarizer.pipeline._embedding(waveforms[:2], masks=masks[:2])
    campplus = PretrainedSpeakerEmbedding(_packaged_embedding(models_config, "campplus"))(waveforms[:2], masks=masks[:2])
    weight = float(model.hparams.campplus_weight)
    assert weight == diarizer.settings["fusion_weight"]
    assert fused.shape == (2, 448) and np.allclose(np.linalg.norm(fused, axis=1), 1.0, atol=1e-5)
    unit_campplus = campplus / np.linalg.norm(campplus, axis=1, keepdims=True)
    assert np.allclose(fused[:, :192] / np.sqrt(weight), unit_campplus, atol=1e-5)
    # weight 1.0: the clustering input is CAM++ alone's (unit length, so equal vectors after the zero GE2E half),
    # both as the model computes it and as the CV gets it by rescaling the cached vectors
    with torch.inference_mode():
        alone = fuse(model.campplus(waveforms[:2], masks[:2]), model.ge2e(waveforms[:2], masks[:2]), 1.0).numpy()
    for only_campplus in (alone, reweight_fused(fused, 192, weight, 1.0)):
        assert np.allclose(only_campplus[:, :192], unit_campplus, atol=1e-5) and not only_campplus[:, 192:].any()
    loaded = Model.from_pretrained(save_checkpoint(model, tmp_path / "fused.bin"))  # as write_pipeline_dir stores it
    assert np.allclose(PretrainedSpeakerEmbedding(loaded)(waveforms[:2], masks=masks[:2]), fused, atol=1e-6)


def test_fusion_weight_gives_the_weighted_mean_of_the_two_cosines_and_rescaling_equals_fusing_again():
    import torch

    from moshi_data.pipeline.audio.diarize import embedding_model
    from moshi_data.pipeline.audio.embedding import fuse, reweight_fused

    generator = torch.Generator().manual_seed(0)
    campplus, ge2e = torch.randn(2, 192, generator=generator), torch.randn(2, 256, generator=generator)
    cosine = torch.nn.functional.cosine_similarity
    for weight in (0.0, 0.25, 0.35, 0.5, 1.0):
        fused = fuse(campplus, ge2e, weight)
        assert torch.allclose(fused.norm(dim=1), torch.ones(2), atol=1e-6)
        expected = weight * cosine(campplus[0], campplus[1], dim=0) + (1 - weight) * cosine(ge2e[0], ge2e[1], dim=0)
        assert torch.isclose(cosine(fused[0], fused[1], dim=0), expected, atol=1e-6), weight
        assert np.allclose(reweight_fused(fuse(campplus, ge2e, 0.5).numpy(), 192, 0.5, weight), fused.numpy(), atol=1e-6)
    nan = float("nan")  # too few frames: both models give NaN, and so does the fused row (pyannote skips it)
    assert torch.isnan(fuse(torch.full((1, 192), nan), torch.full((1, 256), nan), 0.35)).all()
    with pytest.raises(ValueError, match="one half is zero"):
        reweight_fused(fuse(campplus, ge2e, 1.0).numpy(), 192, 1.0, 0.5)
    with pytest.raises(ConfigError, match=r"diarization\.fusion_weight") as refused:
        embedding_model("campplus+ge2e", 1.5, 20)
    assert describe(refused.value).startswith("diarization.fusion_weight")  # the one line the CLI prints
    for frames in (0, 2.5, True):
        with pytest.raises(ConfigError, match=r"diarization\.min_active_frames"):
            embedding_model("campplus", 0.65, frames)


@pytest.mark.parametrize("name", ["ge2e", "campplus+ge2e"])
def test_missing_resemblyzer_names_the_install_step_and_the_key(name, monkeypatch):
    from moshi_data.pipeline.audio.diarize import embedding_model

    monkeypatch.setitem(sys.modules, "resemblyzer", None)  # `import resemblyzer` raises ImportError
    with pytest.raises(DiarizationModelError, match=r"resemblyzer is not importable.*install\.sh audio.*"
                                                    r"diarization\.embedding_model"):
        embedding_model(name, 0.65, 20)


def test_local_pipeline_directory_runs_end_to_end(models_config, diarizer, sample_audio, sample_turns, shared_data,
                                                  tmp_path):
    """A directory written with a powerset bias unlike both the config default's and the pipeline class's default
    (0/0) loads (pyannote's Pipeline.from_pretrained) to the offline pipeline with that bias: the same turns, not the
    default's (so a config.yaml that lost the bias would fail here)."""
    from moshi_data.pipeline.audio.diarize import BiasedPowerset, build_offline_pipeline

    written = {"speech": 0.5, "overlap": 0.0}
    assert models_config["diarization"]["powerset_bias"] != written
    settings = {**models_config["diarization"], "powerset_bias": written}
    directory = write_pipeline_dir(settings, tmp_path / "pipeline")
    assert sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()) == [
        "config.yaml", "embedding/pytorch_model.bin", "segmentation/pytorch_model.bin"]
    config = apply_overrides(models_config, [f"diarization.pipeline={directory}"])
    production = Diarizer(config)
    production.setup()  # pyannote's Pipeline.from_pretrained(<directory>), as for a downloaded hub pipeline
    conversion = production.pipeline._segmentation.conversion
    assert isinstance(conversion, BiasedPowerset) and (conversion.speech, conversion.overlap) == (0.5, 0.0)
    turns = production.diarize(sample_audio)
    own = diarizer.pipeline
    offline = build_offline_pipeline(settings, segmentation=own._segmentation.model, embedding=own._embedding.model_)
    assert turns == diarizer.diarize_file(diarizer.file(sample_audio), offline) != sample_turns
    assert _sample_der(shared_data, turns) <= models_config["evaluation"]["targets"]["der_sample_collar_025"]
    bounds = models_config["diarization"]
    assert production.model_versions["diarization"] == (f"pyannote pipeline {directory}; min_speakers "
                                                        f"{bounds['min_speakers']}, max_speakers {bounds['max_speakers']}")


def test_shard_provenance_names_every_setting_that_changes_the_turns(models_config):
    """meta.json's model_versions.diarization differs whenever a setting that changes the turns does (no model loads)."""
    settings = models_config["diarization"]

    def versions(**changed):
        clustering = {**settings["clustering"], **changed.pop("clustering", {})}
        return Diarizer({**models_config, "diarization": {**settings, **changed, "clustering": clustering}}
                        ).model_versions["diarization"]

    variants = [versions(), versions(segmentation_step=0.2), versions(min_duration_off=0.2),
                versions(clustering={"min_cluster_size": 3}), versions(clustering={"threshold": 0.4}),
                versions(clustering={"method": "centroid"}), versions(min_active_frames=10),
                versions(embedding_exclude_overlap=False), versions(fusion_weight=0.35), versions(max_speakers=4),
                versions(num_speakers=2), versions(segmentation_model="/models/segmentation.bin"),
                versions(powerset_bias={"speech": 1.0, "overlap": 0.0}),
                versions(powerset_bias={"speech": 0.0, "overlap": 1.0})]
    assert len(set(variants)) == len(variants)
    assert versions() == versions(embedding_batch_size=8)  # batch sizes do not change the turns


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


@pytest.mark.parametrize("step", [0, -0.1, 1.5, "abc", True, float("nan")])
def test_segmentation_step_outside_the_window_names_the_config_key(models_config, step):
    """A step outside (0, 1], not a number, or a bool (True is not 1.0): one line naming the key, before any model loads."""

    config = {**models_config, "diarization": {**models_config["diarization"], "segmentation_step": step}}
    with pytest.raises(ConfigError, match=r"^diarization\.segmentation_step must be a number within \(0, 1\]") as error:
        Diarizer(config).setup()
    assert "\n" not in str(error.value) and repr(step) in str(error.value)


def test_missing_wav2vec2_model_names_the_config_key(models_config, tmp_path):
    with pytest.raises(RuntimeError, match=r"align\.wav2vec2_model"):
        Transcriber(models_config)._load_wav2vec2(str(tmp_path / "no-such-model"), "en")


def test_diarizer_is_picklable_before_setup_and_keeps_overlap(models_config, diarizer, sample_turns):
    import pickle

    assert pickle.loads(pickle.dumps(Diarizer(models_config)))._pipeline is None
    turns = sample_turns
    overlaps = [(a, b) for a in turns for b in turns
                if a.speaker < b.speaker and a.start < b.end and b.start < a.end]
    assert overlaps, "the sample has overlapped speech (18.05-18.59 s in sample.rttm); none was kept"


def _speaker_groups(centres: int, per_group: int = 15, spread: float = 0.3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(centres, 64))
    labels = np.repeat(np.arange(centres), per_group)
    return centre[labels] + spread * rng.normal(size=(len(labels), 64)), labels


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


def test_spectral_clusters_find_the_number_of_speakers_within_the_bounds():
    """spectralcluster's auto-tuned clustering: three separated voices are three clusters, one voice one (its
    single-vs-multi decision), a forced or capped number is kept, labels are 0..k-1, the same input gives the same
    labels, and fewer than two embeddings need no clustering."""
    from moshi_data.pipeline.audio.diarize import spectral_clusters

    three, truth = _speaker_groups(3)
    labels = spectral_clusters(three, 1, 8)
    assert _same_partition(labels, truth) and sorted(set(labels.tolist())) == [0, 1, 2]
    assert np.array_equal(spectral_clusters(three, 1, 8), labels)
    one, _ = _speaker_groups(1)
    assert set(spectral_clusters(one, 1, 8).tolist()) == {0}
    assert len(set(spectral_clusters(three, 1, 8, num_clusters=2).tolist())) == 2
    assert len(set(spectral_clusters(three, 1, 2).tolist())) <= 2
    assert len(set(spectral_clusters(one, 2, 8).tolist())) >= 2  # a minimum is kept even against the data
    assert spectral_clusters(three[:1], 1, 8).tolist() == [0] and spectral_clusters(three[:0], 1, 8).tolist() == []
    assert spectral_clusters(three[:2], 1, 8).tolist() == [0, 0]
    for count in (2, 3):  # a forced number (or minimum) equal to the number of embeddings: each its own cluster
        assert sorted(spectral_clusters(three[:count], 1, 8, num_clusters=count).tolist()) == list(range(count))
        assert sorted(spectral_clusters(three[:count], count, 8).tolist()) == list(range(count))


def test_spectral_clusters_do_not_depend_on_or_change_numpys_global_random_state():
    """The library's single-cluster check fits a GMM with numpy's global generator: seeded inside, put back after."""
    from moshi_data.pipeline.audio.diarize import spectral_clusters

    embeddings, _ = _speaker_groups(1, per_group=6, spread=2.0, seed=9)  # the GMM's 1-vs-2 decision flips with the draws
    results = []
    for seed in range(6):
        np.random.seed(seed)
        before = np.random.get_state()[1].copy()
        results.append(spectral_clusters(embeddings, 1, 8).tolist())
        assert np.array_equal(np.random.get_state()[1], before)
    assert all(result == results[0] for result in results)


def test_offline_clustering_runs_spectral_through_pyannotes_clustering_call():
    """method=spectral in the offline pipeline's clustering: pyannote's __call__ (filter, cluster, assign) with
    spectral_clusters' labels; a linkage method still gets pyannote's own tree (a different partition here)."""
    from moshi_data.pipeline.audio.diarize import SPECTRAL, ShortClipAgglomerativeClustering, spectral_clusters

    embeddings, truth = _speaker_groups(3, per_group=10)
    clustering = ShortClipAgglomerativeClustering()
    clustering.instantiate({"method": SPECTRAL, "threshold": 1.9, "min_cluster_size": 1})
    segmentations = _all_active_segmentations(len(embeddings))
    hard, _, centroids = clustering(embeddings.reshape(len(embeddings), 1, -1), segmentations=segmentations)
    assert _same_partition(hard[:, 0], truth) and centroids.shape == (3, 64)
    assert np.array_equal(clustering.cluster(embeddings.copy(), 1, 8), spectral_clusters(embeddings, 1, 8))
    clustering.instantiate({"method": "average", "threshold": 1.9, "min_cluster_size": 1})  # everything merged
    hard, _, _ = clustering(embeddings.reshape(len(embeddings), 1, -1), segmentations=segmentations)
    assert set(hard[:, 0].tolist()) == {0}


def _all_active_segmentations(chunks: int):
    """(chunks, frames, 1) segmentation where the one local speaker of every chunk is active throughout."""
    from pyannote.core import SlidingWindow, SlidingWindowFeature

    return SlidingWindowFeature(np.ones((chunks, 100, 1)), SlidingWindow(start=0.0, duration=10.0, step=1.0))


def test_an_unknown_clustering_method_names_the_config_key(models_config):
    from moshi_data.pipeline.audio.diarize import pipeline_parameters

    settings = models_config["diarization"]
    with pytest.raises(ConfigError, match=r"^diarization\.clustering\.method must be one of average, .*spectral, "
                                          r"got 'averag'$"):
        pipeline_parameters({**settings, "clustering": {**settings["clustering"], "method": "averag"}})
    for key, value in (("threshold", None), ("min_cluster_size", None), ("threshold", "0.3"), ("min_cluster_size", True)):
        clustering = {**settings["clustering"], "method": "spectral", key: value}
        with pytest.raises(ConfigError, match=rf"^diarization\.clustering\.{key} must be a number \(unused by spectral, "
                                              rf"still required\), got {value!r}$"):
            pipeline_parameters({**settings, "clustering": clustering})


def test_a_spectral_pipeline_directory_loads_with_spectral_clustering(models_config, tmp_path):
    """write_pipeline_dir with method spectral: pyannote's Pipeline.from_pretrained gives the offline pipeline with
    spectral clustering (the CV's setting, usable in production), named so in the provenance."""
    settings = {**models_config["diarization"], "clustering": {**models_config["diarization"]["clustering"],
                                                               "method": "spectral"}}
    directory = write_pipeline_dir(settings, tmp_path / "pipeline")
    production = Diarizer(apply_overrides(models_config, [f"diarization.pipeline={directory}"]))
    production.setup()
    assert production.pipeline.clustering.method == "spectral"
    offline = Diarizer({**models_config, "diarization": settings})
    assert "spectral clustering (spectralcluster 0.2.22)" in offline.model_versions["diarization"]
    assert "agglomerative" not in offline.model_versions["diarization"]
