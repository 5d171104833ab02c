"""Diarization dev set and cross-validation: every real recording, balanced folds, simulated
conversations cut only from their own fold, settings chosen on the other folds, main-stream purity."""
from __future__ import annotations

import numpy as np
import pytest

from moshi_data.pipeline.audio.devset import (assign_folds, build_devset, real_cases, simulate_conversation,
                                              single_speaker_regions)
from moshi_data.pipeline.audio.diarization_eval import (choose_settings, der_components, main_stream_purity,
                                                        miss_breakdown, parameter_grid)
from moshi_data.pipeline.audio.types import Turn


@pytest.fixture(scope="module")
def devset(shared_data, models_config):
    return build_devset(shared_data, models_config["evaluation"]["devset"])


def test_every_real_recording_with_a_reference_is_in(shared_data):
    cases = real_cases(shared_data)
    uris = [uri for uri, _, _ in cases]
    assert len(uris) == len(set(uris)) == 16
    assert {"sample", "an4", "falcon", "michael", "dev00", "dev01"} <= set(uris)
    assert {f"trn{i:02d}" for i in range(10)} <= set(uris)
    assert next(wav.name for uri, wav, _ in cases if uri == "trn00") == "trñ00.wav"  # uri trn00 in the RTTM
    michael = next(turns for uri, _, turns in cases if uri == "michael")
    assert {t.speaker for t in michael} == {"stereo_conversation:michael", "stereo_conversation:sickmichael"}


def test_folds_are_balanced_and_deterministic():
    uris = [f"rec{i}" for i in range(16)]
    folds = assign_folds(uris, 5)
    assert folds == assign_folds(list(reversed(uris)), 5)
    assert sorted(np.bincount(list(folds.values()))) == [3, 3, 3, 3, 4]


def test_simulated_conversations_stay_in_their_fold_and_are_deterministic(devset, models_config):
    settings = models_config["evaluation"]["devset"]["simulation"]
    real = [r for r in devset if r.kind == "real"]
    simulated = [r for r in devset if r.kind == "simulated"]
    assert len(simulated) == models_config["evaluation"]["devset"]["folds"] * settings["per_fold"]
    speakers_by_fold: dict[int, set] = {}
    for recording in real:
        speakers_by_fold.setdefault(recording.fold, set()).update(t.speaker for t in recording.reference)
    for recording in simulated:
        speakers = {t.speaker for t in recording.reference}
        assert speakers == set(recording.sources) and settings["min_speakers"] <= len(speakers) <= settings["max_speakers"]
        assert speakers <= speakers_by_fold[recording.fold]  # cut from this fold's recordings only
        assert recording.duration >= settings["duration_s"] and np.abs(recording.audio).max() <= 0.99
    overlapping = sum(a.end > b.start for r in simulated for a, b in zip(r.reference, r.reference[1:]))
    assert overlapping > 0
    pool = {"A": [np.full(16000, 0.1, np.float32)], "B": [np.full(24000, -0.1, np.float32)],
            "C": [np.full(8000, 0.2, np.float32)]}
    first = simulate_conversation(pool, "x", 0, 7, settings)
    second = simulate_conversation(pool, "x", 0, 7, settings)
    assert np.array_equal(first.audio, second.audio) and first.reference == second.reference
    assert first.reference != simulate_conversation(pool, "x", 0, 8, settings).reference


def test_single_speaker_regions_exclude_overlap_and_short_stretches():
    turns = [Turn(0.0, 3.0, "A"), Turn(2.0, 5.0, "B"), Turn(5.0, 5.5, "A"), Turn(6.0, 9.0, "A")]
    assert single_speaker_regions(turns, 1.0) == [(0.0, 2.0, "A"), (3.0, 5.0, "B"), (6.0, 9.0, "A")]


def test_each_fold_is_scored_with_the_setting_chosen_on_the_other_folds():
    # 3 settings x 4 recordings (folds 0, 0, 1, 1): setting 0 is best on fold 0, setting 2 on fold 1
    der = np.array([[0.1, 0.1, 0.9, 0.9],
                    [0.45, 0.45, 0.45, 0.45],
                    [0.9, 0.9, 0.2, 0.2]])
    chosen, all_data = choose_settings(der, [0, 0, 1, 1])
    assert chosen == {0: 2, 1: 0} and all_data == 1
    grid = {"threshold": [0.5, 0.6], "min_cluster_size": [1, 6], "min_duration_off": [0.0], "method": ["centroid"]}
    assert len(parameter_grid({**grid, "fusion_weight": [0.35, 0.5]})) == 8
    with pytest.raises(ValueError, match="within"):
        parameter_grid({**grid, "fusion_weight": [1.5]})


@pytest.mark.parametrize("config_weight", [0.0, 1.0])
def test_cv_rescales_fused_vectors_cached_at_an_interior_weight_whatever_the_config_weight(config_weight, models_config):
    """A config weight of 0 or 1 (allowed; 1 = CAM++ alone) must not be the weight the CV caches and rescales
    from (one half would be zero); every grid weight, 0 and 1 included, is reached from the cache's 0.5."""
    import torch

    from moshi_data.pipeline.audio.diarization_eval import (CACHE_FUSION_WEIGHT, cache_diarizer, files_per_setting,
                                                            fusion_weight_of)
    from moshi_data.pipeline.audio.diarize import Diarizer
    from moshi_data.pipeline.audio.embedding import fuse
    from moshi_data.pipeline.config import apply_overrides

    configured = Diarizer(apply_overrides(models_config, [f"diarization.fusion_weight={config_weight}"]))
    cv = cache_diarizer(configured)  # no model is loaded: Diarizer loads on first use
    assert fusion_weight_of(cv) == CACHE_FUSION_WEIGHT == 0.5 and cv._pipeline is None
    assert {k: v for k, v in cv.settings.items() if k != "fusion_weight"} == {
        k: v for k, v in configured.settings.items() if k != "fusion_weight"}
    default = Diarizer(models_config)
    assert cache_diarizer(default) is not default and cache_diarizer(cv) is cv
    assert cache_diarizer(Diarizer(apply_overrides(models_config, ["diarization.embedding_model=campplus"]))).settings[
        "fusion_weight"] == models_config["diarization"]["fusion_weight"]  # not fused: left as it is

    generator = torch.Generator().manual_seed(1)
    campplus, ge2e = torch.randn(6, 192, generator=generator), torch.randn(6, 256, generator=generator)
    cached = fuse(campplus, ge2e, CACHE_FUSION_WEIGHT).numpy().reshape(3, 2, 448)  # (chunks, local speakers, dim)
    files = [{"uri": "a", "training_cache/embeddings": {"embeddings": cached, "other": 1}}, {"uri": "silent"}]
    weights = [config_weight, config_weight, 0.65, 0.5, 1.0 - config_weight]
    grid = [{"fusion_weight": weight, "threshold": 0.3} for weight in weights]
    lists = set()
    for (setting, weighted), weight in zip(files_per_setting(files, grid, 192), weights):
        assert setting["fusion_weight"] == weight
        expected = fuse(campplus, ge2e, weight).numpy().reshape(3, 2, 448)
        assert np.allclose(weighted[0]["training_cache/embeddings"]["embeddings"], expected, atol=1e-6), weight
        assert weighted[0]["training_cache/embeddings"]["other"] == 1 and weighted[1] == {"uri": "silent"}
        lists.add(id(weighted))
    assert len(lists) == 1  # one copy held: the same list, its entries replaced per weight
    assert files[0]["training_cache/embeddings"]["embeddings"] is cached  # the cached vectors themselves untouched
    assert np.allclose(cached, fuse(campplus, ge2e, 0.5).numpy().reshape(3, 2, 448))


def test_cv_grid_reports_no_fusion_weight_for_an_embedding_that_is_not_fused():
    from moshi_data.pipeline.audio.diarization_eval import cv_grid

    grid = parameter_grid({"threshold": [0.5, 0.6], "min_cluster_size": [1], "min_duration_off": [0.0],
                           "method": ["centroid"], "fusion_weight": [0.35, 0.65]})
    assert cv_grid(grid, fused=True) == grid
    assert cv_grid(grid, fused=False) == [{**setting, "fusion_weight": None} for setting in grid[:2]]


def test_main_stream_purity_maps_the_main_speaker_to_its_reference_speaker():
    reference = [Turn(0.0, 10.0, "alice"), Turn(10.0, 14.0, "bob")]
    hypothesis = [Turn(0.0, 8.0, "S0"), Turn(8.0, 14.0, "S1")]  # S1 holds 2 s of alice and bob's 4 s
    purity = main_stream_purity(reference, hypothesis, 1.0)
    assert purity["most_speech"] == {"reference_speaker": "alice", "precision": 1.0, "recall": 0.8}
    assert purity["each"]["precision"] == pytest.approx((8 * 1.0 + 6 * 4 / 6) / 14)
    assert purity["random"]["precision"] == pytest.approx((1.0 + 4 / 6) / 2)  # S0 or S1, each half the time
    assert purity["random"]["recall"] == pytest.approx((0.8 + 1.0) / 2)
    assert main_stream_purity(reference, [], 1.0) == {"most_speech": None, "random": None, "each": None}


def test_missed_speech_is_split_into_overlap_single_speaker_and_whole_turns():
    reference = [Turn(0.0, 10.0, "alice"), Turn(4.0, 6.0, "bob"), Turn(12.0, 14.0, "carol")]
    hypothesis = [Turn(1.0, 10.0, "S0")]  # alice's first second, bob's overlap and carol's whole turn missed
    missed = miss_breakdown(reference, hypothesis, collar=0.0)
    assert missed == pytest.approx({"overlap": 2.0, "single": 3.0, "whole_turns": 2.0}, abs=0.011)
    assert sum(missed[k] for k in ("overlap", "single")) == pytest.approx(
        der_components(reference, hypothesis, 0.0)["missed"], abs=0.011)
    with_collar = miss_breakdown(reference, hypothesis, collar=0.5)  # 0.25 s each side of every boundary unscored
    assert with_collar == pytest.approx({"overlap": 1.5, "single": 2.25, "whole_turns": 1.5}, abs=0.011)
    assert sum(with_collar[k] for k in ("overlap", "single")) == pytest.approx(
        der_components(reference, hypothesis, 0.5)["missed"], abs=0.011)
