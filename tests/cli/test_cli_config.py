"""Strict configs: typo keys, bad types, partial and malformed YAML, open tables, Beam flags."""
from __future__ import annotations

import pytest

from moshi_data.pipeline.command import check_beam_args, command_parser
from moshi_data.pipeline.config import ConfigError, load_config
from moshi_data.trainer.train import resolve_config


@pytest.mark.parametrize("config, override, hint", [
    ("text_corpus", "language.treshold=0.1", "did you mean 'language.threshold'"),
    ("text_corpus", "languag.threshold=0.1", "did you mean 'language'"),
    ("trainer", "train.batch_sise=2", "did you mean 'train.batch_size'"),
    ("text_corpus", "quality.filter.max_rand_scor=0.5", "did you mean 'quality.filter.max_rand_score'"),
    ("audio_shards", "diarization.clustering.treshold=1.0", "did you mean 'diarization.clustering.threshold'"),
])
def test_unknown_override_key_names_the_closest(config, override, hint):
    with pytest.raises(ConfigError, match=hint):
        load_config(config, [override])


def test_trainer_rejects_a_typo_even_with_a_preset():
    with pytest.raises(ConfigError, match="train.batch_size"):
        resolve_config("trainer", "tiny", ["train.batch_sise=2"])
    assert resolve_config("trainer", "tiny", ["train.batch_size=2"])["train"]["batch_size"] == 2


@pytest.mark.parametrize("override, message", [
    ("language.threshold=high", "language.threshold: expected a number"),
    ("input.docs_per_chunk=2.5", "expected an integer"),
    ("line_dedup.keep_canonical=maybe", "expected a boolean"),
    ("stages=min_length", "expected a list"),
    ("language=0.5", "expected a mapping"),
    ("language.threshold", "expected KEY.SUB=VALUE"),
    ("language.threshold=[", "not valid YAML"),
])
def test_values_are_type_checked(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("text_corpus", [override])


def test_accepted_values_keep_their_type():
    config = load_config("text_corpus", ["language.threshold=1", "output.compression=123", "classifiers.line_samples=x.jsonl"])
    assert config["language"]["threshold"] == 1.0 and isinstance(config["language"]["threshold"], float)
    assert config["output"]["compression"] == "123"  # a string setting keeps the text
    assert config["classifiers"]["line_samples"] == "x.jsonl"  # a null default accepts any value
    assert load_config("audio_models", ["asr.language=null"])["asr"]["language"] is None  # null: documented "detect"


def test_open_tables_accept_new_keys():
    assert load_config("audio_shards", ["codes.codec.weights=/m.safetensors"])["codes"]["codec"] == {"weights": "/m.safetensors"}
    assert load_config("quality_labels", ["labels.extra=[]"])["labels"]["extra"] == []
    assert load_config("text_corpus", ["quality.filter.min_scores={wiki: 0.1}"])["quality"]["filter"]["min_scores"] == {"wiki": 0.1}


def test_partial_user_yaml_is_merged_over_the_defaults(tmp_path):
    partial = tmp_path / "mine.yaml"
    partial.write_text("language:\n  threshold: 0.5\n")
    config = load_config(partial, defaults="text_corpus")
    assert config["language"] == {**load_config("text_corpus")["language"], "threshold": 0.5}
    assert config["runner"] == load_config("text_corpus")["runner"]  # was KeyError: 'runner'
    based = tmp_path / "based.yaml"
    based.write_text("base: trainer\ntrain: {batch_size: 3}\n")
    assert load_config(based)["train"]["batch_size"] == 3 and "model" in load_config(based)


def test_user_yaml_keys_and_types_are_checked(tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("language:\n  treshold: 0.5\n")
    with pytest.raises(ConfigError, match=r"typo.yaml: unknown key 'language.treshold'; did you mean 'language.threshold'"):
        load_config(typo, defaults="text_corpus")
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text("language:\n  threshold: high\n")
    with pytest.raises(ConfigError, match="expected a number"):
        load_config(wrong, defaults="text_corpus")


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("language: [\n")
    with pytest.raises(ConfigError) as error:
        load_config(bad, defaults="text_corpus")
    assert "malformed YAML" in str(error.value) and "line 2" in str(error.value) and "\n" not in str(error.value)
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(tmp_path / "list.yaml", defaults="text_corpus")


def test_missing_config_names_the_packaged_ones():
    with pytest.raises(FileNotFoundError, match="text_corpus"):
        load_config("no_such_config")


def test_only_real_beam_options_pass():
    parser = command_parser("moshi_data.beam_jobs.text_corpus", None, config="text_corpus", beam=True)
    parser.add_argument("--limit", type=int)
    real = ["--runner=DirectRunner", "--direct_num_workers", "2", "--s3_endpoint_url=http://127.0.0.1:1",
            "--save_main_session", "--experiments=use_runner_v2", "--default_sdk_harness_log_level=INFO"]
    assert check_beam_args(parser, real) == real
    for wrong, hint in ((["--limt", "1"], "did you mean --limit"), (["--runer=DirectRunner"], "did you mean --runner"),
                        (["b.jsonl"], "quote it")):
        with pytest.raises(SystemExit) as exit_info:
            check_beam_args(parser, wrong)
        assert exit_info.value.code == 2


def test_audio_evaluation_fails_on_a_missed_target_unless_report_only():
    from moshi_data.pipeline.audio.evaluate import fail_on_missed_targets
    from moshi_data.pipeline.command import RunFailed

    checks = [("der_sample_collar_025", 0.1, "<=", 0.2, True), ("onset_median_ms", 80.0, "<=", 50, False)]
    with pytest.raises(RunFailed, match="1 of 2 targets missed: onset_median_ms"):
        fail_on_missed_targets(checks, report_only=False)
    fail_on_missed_targets(checks, report_only=True)
    fail_on_missed_targets(checks[:1], report_only=False)
