"""Powerset decision bias (diarization.powerset_bias): pyannote's conversion at 0/0, the bias installed in the offline
pipeline, refused values, and the CV's per-bias model outputs."""
import pytest
import torch

from moshi_data.pipeline.audio.diarize import BiasedPowerset, Diarizer
from moshi_data.pipeline.command import describe
from moshi_data.pipeline.config import ConfigError


def _log_probabilities(frames: int = 500) -> torch.Tensor:
    """Random powerset log-probabilities of segmentation-3.0's shape (3 speakers, at most 2 at once: 7 classes)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(4, frames, 7, generator=generator).log_softmax(dim=-1)


def test_zero_bias_is_pyannotes_conversion_and_a_bias_favours_speech_and_overlap():
    from pyannote.audio.utils.powerset import Powerset

    scores = _log_probabilities()
    pyannote = Powerset(3, 2)
    assert torch.equal(BiasedPowerset(3, 2)(scores), pyannote(scores))
    assert torch.allclose(BiasedPowerset(3, 2)(scores, soft=True), pyannote(scores, soft=True), atol=1e-6)
    biased = BiasedPowerset(3, 2, speech=1.0, overlap=0.5)
    # classes {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}: speech on every class with a speaker, overlap on pairs too
    assert biased.bias.tolist() == [0.0, 1.0, 1.0, 1.0, 1.5, 1.5, 1.5]
    assert torch.equal(biased(scores), pyannote(scores + biased.bias))  # the bias, then pyannote's hard argmax
    assert torch.allclose(biased(scores, soft=True), pyannote((scores + biased.bias).log_softmax(-1), soft=True))
    # pyannote code that calls to_multilabel directly (not forward) gets the bias too
    assert torch.equal(biased.to_multilabel(scores), pyannote(scores + biased.bias))
    assert torch.equal(biased.to_multilabel(scores, soft=True), biased(scores, soft=True))
    speakers = {name: BiasedPowerset(3, 2, **bias)(scores).sum(-1)  # active speakers per frame
                for name, bias in {"none": {}, "speech": {"speech": 1.0}, "overlap": {"overlap": 1.0}}.items()}
    assert (speakers["speech"] >= 1).sum() > (speakers["none"] >= 1).sum()
    assert (speakers["overlap"] == 2).sum() > (speakers["none"] == 2).sum()
    assert (speakers["overlap"] == 1).sum() < (speakers["none"] == 1).sum()  # overlap bias: never more single speech


def _with_bias(models_config, **bias) -> dict:
    settings = models_config["diarization"]
    return {**models_config, "diarization": {**settings, "powerset_bias": {**settings["powerset_bias"], **bias}}}


def test_offline_pipeline_converts_with_the_configured_bias(diarizer, models_config, sample_audio):
    """The default pipeline's conversion is the biased one with the configured bias; a bias of 0/0 is pyannote's
    argmax, and a positive bias gives more speech (and overlap) in the binarized segmentation than 0/0."""
    from moshi_data.pipeline.audio.diarize import build_offline_pipeline

    configured = models_config["diarization"]["powerset_bias"]
    default = diarizer.pipeline._segmentation.conversion
    assert isinstance(default, BiasedPowerset) and (default.speech, default.overlap) == (configured["speech"],
                                                                                         configured["overlap"])
    own = diarizer.pipeline
    built = {name: build_offline_pipeline(_with_bias(models_config, speech=value, overlap=value)["diarization"],
                                          segmentation=own._segmentation.model, embedding=own._embedding.model_)
             for name, value in (("argmax", 0.0), ("biased", 1.0))}
    assert not built["argmax"]._segmentation.conversion.bias.any()
    conversion = built["biased"]._segmentation.conversion
    assert (built["biased"].speech_bias, built["biased"].overlap_bias, conversion.speech, conversion.overlap) == (
        1.0, 1.0, 1.0, 1.0)
    file = Diarizer.file(sample_audio[: 20 * 16000])
    frames = {name: pipeline._segmentation(file).data.sum(-1)  # active local speakers per (window, frame)
              for name, pipeline in built.items()}
    assert (frames["biased"] >= 1).sum() > (frames["argmax"] >= 1).sum()
    assert (frames["biased"] >= 2).sum() > (frames["argmax"] >= 2).sum()


@pytest.mark.parametrize("bias, message", [
    ({"speech": float("nan")}, r"^diarization\.powerset_bias\.speech must be a finite number .*got nan$"),
    ({"overlap": float("inf")}, r"^diarization\.powerset_bias\.overlap must be a finite number .*got inf$"),
    ({"speech": "1"}, r"^diarization\.powerset_bias\.speech must be a finite number .*got '1'$"),
    ({"overlap": True}, r"^diarization\.powerset_bias\.overlap must be a finite number .*got True$"),
    ({"silence": 1.0}, r"^diarization\.powerset_bias must be a mapping of speech and overlap"),
])
def test_a_bad_powerset_bias_is_one_line_naming_its_key_before_any_model_loads(models_config, bias, message, monkeypatch):
    from moshi_data.pipeline.audio import diarize

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded before the bias was checked")

    monkeypatch.setattr(diarize, "load_segmentation_model", no_model)
    with pytest.raises(ConfigError, match=message) as error:
        Diarizer(_with_bias(models_config, **bias)).setup()
    assert "\n" not in describe(error.value)


def test_a_pipeline_loaded_by_name_loads_whatever_the_offline_bias_but_a_bad_bias_is_still_refused(models_config,
                                                                                                      monkeypatch):
    """diarization.pipeline set: the loaded pipeline keeps its own conversion and the offline default's bias (1/1 by
    default) is not used, like the step and the clustering settings, so it goes on to load; a malformed bias is still
    a one-line ConfigError naming the key (a typo is never accepted)."""
    class Loaded(Exception):
        pass

    def loading(self, name):
        raise Loaded(name)

    monkeypatch.setattr(Diarizer, "_load_pipeline", loading)
    by_name = {**models_config, "diarization": {**models_config["diarization"], "pipeline": "org/hub-pipeline"}}
    assert models_config["diarization"]["powerset_bias"] != {"speech": 0.0, "overlap": 0.0}
    for bias in ({"speech": 0.0, "overlap": 0.0}, {"speech": 2.5}, {"overlap": -0.5}, {}):  # {}: the default
        with pytest.raises(Loaded, match="org/hub-pipeline"):
            Diarizer(_with_bias(by_name, **bias)).setup()
    with pytest.raises(ConfigError, match=r"^diarization\.powerset_bias\.speech") as error:
        Diarizer(_with_bias(by_name, speech=float("nan"))).setup()
    assert "\n" not in describe(error.value)


def test_cross_validation_computes_and_caches_model_outputs_per_bias(diarizer, sample_audio, shared_data, tmp_path,
                                                                     monkeypatch):
    """Two 12 s pieces in two folds, a grid of two speech biases: one pipeline per bias around the diarizer's models,
    outputs cached under keys that differ by bias; with fold 0 made to choose speech bias 2.0 and fold 1 bias 0, each
    held-out entry (DER components, missed speech, purity, speakers) is that of a pipeline configured with its fold's
    setting, whose turns differ by bias."""
    from moshi_data.pipeline.audio.diarization_eval import CACHE_FUSION_WEIGHT, model_output_pipelines, parameter_grid
    from test_am_devset import cross_validate_with_fold_0_on_the_second_variant, sample_pieces

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        recordings = sample_pieces(shared_data, sample_audio)
        grid = parameter_grid({"threshold": [0.3, 0.7], "min_cluster_size": [1], "min_duration_off": [0.0],
                               "method": ["weighted"], "fusion_weight": [CACHE_FUSION_WEIGHT], "segmentation_step": [0.2],
                               "speech_bias": [0.0, 2.0], "overlap_bias": [0.0]})
        assert [(s["speech_bias"], s["threshold"]) for s in grid] == [(0.0, 0.3), (0.0, 0.7), (2.0, 0.3), (2.0, 0.7)]
        own = diarizer.pipeline
        pipelines = model_output_pipelines(diarizer, [(0.2, 0.0, 0.0), (0.2, 2.0, 0.0)])
        for (step, speech, overlap), pipeline in pipelines.items():
            assert (pipeline.segmentation_step, pipeline.speech_bias, pipeline.overlap_bias) == (step, speech, overlap)
            assert pipeline._segmentation.model is own._segmentation.model
            assert pipeline._segmentation.conversion.bias.tolist()[1] == speech

        cross_validate_with_fold_0_on_the_second_variant(diarizer, recordings, grid, [0.25], tmp_path, monkeypatch,
                                                         "speech_bias")  # fold 0: speech bias 2.0, fold 1: bias 0
    finally:
        torch.set_num_threads(previous)
