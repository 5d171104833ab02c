"""The CV's per-setting scoring (SettingScorer: setting-independent work done once) equals pyannote's whole
SpeakerDiarization.apply (Diarizer.diarize_file) + pyannote.metrics (der_components) and the main-stream purity
(selection_purity) for every setting."""
import itertools

import numpy as np
import pytest

from moshi_data.pipeline.audio.types import Turn

COLLARS = (0.25, 0.0)
MIN_MAIN_SPEECH_S = 2.0  # not streams.min_main_speech_s (1.0): a scorer ignoring its own would fail


@pytest.fixture
def one_torch_thread():
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def recordings(shared_data, sample_audio) -> list:
    """A 12 s piece and the whole 30 s pyannote sample with their reference turns, and 3 s of silence."""
    from moshi_data.pipeline.audio.devset import DevRecording
    from moshi_data.pipeline.audio.rttm import read_rttm

    reference = read_rttm((shared_data / "diarization/pyannote_sample/sample.rttm").read_text())["sample"]
    start, end = 4.0, 16.0
    piece = [Turn(max(t.start, start) - start, min(t.end, end) - start, t.speaker) for t in reference
             if t.end > start and t.start < end]
    return [DevRecording("piece", sample_audio[int(start * 16000): int(end * 16000)], piece, 0, "real"),
            DevRecording("whole", sample_audio, list(reference), 1, "real"),
            DevRecording("silence", np.zeros(3 * 16000, np.float32), [Turn(0.5, 1.0, "A")], 0, "real")]


def test_setting_scorer_gives_the_turns_and_der_of_pyannote_apply_for_every_setting(
        diarizer, sample_audio, shared_data, one_torch_thread):
    """Two segmentation steps and two powerset biases x two fusion weights x every linkage method x thresholds low enough that pyannote's
    clustering searches its dendrogram for a number of clusters within bounds x a minimum cluster size above the
    number of embeddings x min_duration_off 0 / 0.2, on speech and on a recording with none: the fast path's turns,
    DER components (both collars) and purity equal pyannote's apply + pyannote.metrics (+ selection_purity) exactly,
    setting by setting, and so do grid_scores' (the CV's loop). The grid tells every dimension apart (two settings that differ in one value
    only give different turns somewhere), so a fast path scoring a neighbouring setting would fail."""
    from moshi_data.pipeline.audio import diarization_eval as de

    recs = recordings(shared_data, sample_audio)
    grid = de.parameter_grid({"segmentation_step": [0.2, 0.1], "speech_bias": [0.0], "overlap_bias": [0.0],
                              "fusion_weight": [0.35, 0.65], "threshold": [0.05, 0.5, 0.8], "min_cluster_size": [1, 20],
                              "min_duration_off": [0.0, 0.2], "method": list(de.CLUSTERING_METHODS)})
    for speech, overlap in ((1.0, 0.0), (0.0, 1.0)):  # two powerset-bias variants, fewer settings each
        grid += de.parameter_grid({"segmentation_step": [0.1], "speech_bias": [speech], "overlap_bias": [overlap],
                                   "fusion_weight": [0.65], "threshold": [0.5], "min_cluster_size": [1],
                                   "min_duration_off": [0.0, 0.2], "method": list(de.CLUSTERING_METHODS)})
    pipelines = de.model_output_pipelines(diarizer, list(dict.fromkeys(de.model_output_variant(s) for s in grid)))
    dimension = de.fused_dimension(next(iter(pipelines.values())))
    with de.training_mode(pipelines.values()):
        files = {variant: [de.cached_file(diarizer, pipeline, r, None, []) for r in recs]
                 for variant, pipeline in pipelines.items()}
        fast, fast_purity = de.grid_scores(diarizer, pipelines, files, recs, grid, COLLARS, dimension,
                                           MIN_MAIN_SPEECH_S, log=lambda _: None)
        scorers = [de.SettingScorer(r.reference, COLLARS, [0.0, 0.2], diarizer.speaker_bounds(), MIN_MAIN_SPEECH_S)
                   for r in recs]
        reference_turns = []
        pair = None
        for g, (setting, setting_files) in enumerate(de.files_per_setting(files, grid, dimension)):
            pipeline = pipelines[de.model_output_variant(setting)]
            if (de.model_output_variant(setting), setting["fusion_weight"]) != pair:
                pair = (de.model_output_variant(setting), setting["fusion_weight"])
                for scorer, file in zip(scorers, setting_files):
                    scorer.use_segmentation(pipeline, file)
                    scorer.use_embeddings(file)
            de.instantiate(pipeline, setting)
            turns = [diarizer.diarize_file(file, pipeline) for file in setting_files]
            reference_turns.append(turns)
            for r, (recording, scorer) in enumerate(zip(recs, scorers)):
                assert scorer.setting_turns()[setting["min_duration_off"]] == turns[r], (setting, recording.uri)
                assert fast[g][r] == {c: de.der_components(recording.reference, turns[r], c) for c in COLLARS}, \
                    (setting, recording.uri)
                assert fast_purity[g][r] == de.selection_purity(recording.reference, turns[r], MIN_MAIN_SPEECH_S), \
                    (setting, recording.uri)
    assert [scorer.silent for scorer in scorers] == [False, False, True]
    assert all(turns[2] == [] for turns in reference_turns)
    assert {fast[g][2][0.0]["missed"] for g in range(len(grid))} == {0.5}  # silence: the reference turn all missed
    assert {fast_purity[g][2] for g in range(len(grid))} == {None}  # and no main speaker
    assert len({(p["precision"], p["recall"]) for row in fast_purity for p in row[:2]}) > 2  # purity varies
    index = {tuple(setting.values()): g for g, setting in enumerate(grid)}
    for position, key in enumerate(de.GRID_KEYS):
        told_apart = any(reference_turns[index[a]][:2] != reference_turns[index[b]][:2]
                         for a, b in itertools.combinations(index, 2)
                         if [i for i in range(len(a)) if a[i] != b[i]] == [position])
        assert told_apart, key


def test_linkage_trees_are_reused_per_method_and_put_back():
    from pyannote.audio.pipelines import clustering
    from scipy.cluster.hierarchy import linkage

    from moshi_data.pipeline.audio.diarization_eval import LinkageTrees, reused_linkage

    embeddings = np.random.default_rng(0).normal(size=(9, 4))
    trees = LinkageTrees()
    with reused_linkage(trees):
        first = clustering.linkage(embeddings, method="average", metric="cosine")
        again = clustering.linkage(embeddings, method="average", metric="cosine")
        other = clustering.linkage(embeddings, method="single", metric="cosine")
    assert first is again and np.array_equal(first, linkage(embeddings, method="average", metric="cosine"))
    assert np.array_equal(other, linkage(embeddings, method="single", metric="cosine")) and len(trees.trees) == 2
    assert clustering.linkage is linkage
