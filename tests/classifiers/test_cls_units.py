"""Unit tests: run-of-3 rule, aggregation formula, filter rule, label building, fuzzy examples, metrics."""
from __future__ import annotations

import json

import numpy as np
import pytest

from moshi_data.classifiers.calibration import calibrate, choose_max_rand, kept_share
from moshi_data.classifiers.common import precision_recall_f1, roc_auc, write_labelled
from moshi_data.classifiers.evaluation import check_targets
from moshi_data.classifiers.fuzzy_dedup import build_examples
from moshi_data.classifiers.quality import (
    LabelCorpus,
    balance_train,
    build_label_data,
    document_fold,
    document_sides,
    document_split_key,
    is_held_out,
    training_examples,
)
from moshi_data.classifiers.sources import iter_identified_documents
from moshi_data.pipeline.config import load_config
from moshi_data.pipeline.text.fasttext_model import model_text
from moshi_data.pipeline.text.fuzzy_dedup import runs_to_remove
from moshi_data.pipeline.text.quality import aggregate_scores, line_weights, quality_filter_reason, scored_lines


def test_runs_of_three_or_more_flagged_lines_are_removed_and_shorter_runs_kept():
    flags = [True, True, False, True, True, True, False, True, True, True, True, False, True]
    assert runs_to_remove(flags, 3) == [
        False, False, False, True, True, True, False, True, True, True, True, False, False,
    ]
    assert runs_to_remove([True, True, True], 3) == [True, True, True]  # a run at the very end
    assert runs_to_remove([True, True], 3) == [False, False]
    assert runs_to_remove([], 3) == []


def test_document_score_is_the_byte_length_weighted_mean_of_line_probabilities():
    # Hand-computed: lines "abc" (3 bytes + newline = 4) and "é" * 5 (10 bytes + newline = 11);
    # P(rand) = 0.2 and 0.8 -> (0.2 * 4 + 0.8 * 11) / 15 = 9.6 / 15 = 0.64.
    lines = scored_lines("abc\n\n" + "é" * 5 + "\n")
    assert lines == ["abc", "é" * 5]
    weights = line_weights(lines)
    assert weights.tolist() == [4.0, 11.0]
    probabilities = np.array([[0.2, 0.8], [0.8, 0.2]])
    assert aggregate_scores(probabilities, weights, ["rand", "wiki"], 2) == {"rand": 0.64, "wiki": 0.36}
    assert aggregate_scores(np.zeros((0, 2)), np.zeros(0), ["rand", "wiki"], 2) == {"rand": 0.0, "wiki": 0.0}


def test_quality_rule_drops_rand_above_max_and_applies_label_minimums():
    rule = {"max_rand_score": 0.9, "min_scores": {"wiki": 0.1}}
    assert quality_filter_reason({"rand": 0.91, "wiki": 0.5}, rule) == "quality_rand"
    assert quality_filter_reason({"rand": 0.9, "wiki": 0.05}, rule) == "quality_min_wiki"
    assert quality_filter_reason({"rand": 0.9, "wiki": 0.1}, rule) is None
    assert quality_filter_reason({"rand": 0.95}, {"max_rand_score": None, "min_scores": {}}) is None


@pytest.fixture()
def tiny_label_sources(tmp_path):
    (tmp_path / "cc.jsonl").write_text(
        json.dumps({"text": "Click here to subscribe to our newsletter today\nok\nShared line present in two labels"}) + "\n"
        + json.dumps({"text": "Buy cheap shoes online with free shipping now"}) + "\n",
        encoding="utf-8",
    )
    (tmp_path / "wiki.txt").write_text(
        "The river rises in the northern hills and flows south.\nShared line present in two labels\n"
        "The town was founded in the twelfth century by monks.\n",
        encoding="utf-8",
    )
    mapping = {
        "root": str(tmp_path),
        "labels": {
            "rand": [{"path": "cc.jsonl", "format": "jsonl", "fields": ["text"]}],
            "wiki": [{"path": "*.txt", "format": "text"}],
        },
    }
    labels_path = tmp_path / "labels.yaml"
    labels_path.write_text(json.dumps(mapping), encoding="utf-8")
    return load_config("classifiers.yaml", [
        f"quality.labels_config={labels_path}", "quality.labels=[rand, wiki]",
        "quality.min_line_chars=10", "quality.max_lines_per_label=100",
        "quality.holdout_percent=0", "quality.holdout_percent_by_label.rand=0",  # every document trains
    ])


def training_lines_by_label(config):
    return {label: data.train for label, data in build_label_data(config).items()}


def test_label_building_skips_short_lines_and_drops_lines_claimed_by_two_labels(tiny_label_sources):
    lines = training_lines_by_label(tiny_label_sources)
    assert sorted(lines["rand"]) == sorted(model_text(t) for t in [
        "Click here to subscribe to our newsletter today", "Buy cheap shoes online with free shipping now"])
    assert sorted(lines["wiki"]) == sorted(model_text(t) for t in [
        "The river rises in the northern hills and flows south.",
        "The town was founded in the twelfth century by monks."])
    assert training_lines_by_label(tiny_label_sources) == lines  # deterministic


def test_label_building_fails_loudly_on_a_source_that_matches_nothing(tiny_label_sources):
    config = load_config("classifiers.yaml", [f"quality.labels_config={tiny_label_sources['quality']['labels_config']}",
                                              "quality.labels=[rand, wiki, news]"])
    with pytest.raises(ValueError, match="without sources"):
        build_label_data(config)


def many_documents_config(tmp_path, shared_line="boilerplate line repeated in every page"):
    """Two labels of 40 documents each, every document with its own lines plus one shared line."""
    for label in ("rand", "wiki"):
        records = [{"text": f"{shared_line}\n" + "\n".join(f"{label} document {d} sentence {i} with words"
                                                            for i in range(5))} for d in range(40)]
        (tmp_path / f"{label}.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    mapping = {"root": str(tmp_path), "labels": {
        label: [{"path": f"{label}.jsonl", "format": "jsonl"}] for label in ("rand", "wiki")}}
    (tmp_path / "labels.yaml").write_text(json.dumps(mapping), encoding="utf-8")
    return load_config("classifiers.yaml", [
        f"quality.labels_config={tmp_path / 'labels.yaml'}", "quality.labels=[rand, wiki]", "quality.min_line_chars=10",
        "quality.max_lines_per_label=1000", "quality.max_valid_lines_per_label=1000", "quality.holdout_percent=25"])


def test_validation_is_split_by_document_and_never_shares_a_document_or_line_with_training(tmp_path):
    config = many_documents_config(tmp_path)
    data = build_label_data(config)
    assert build_label_data(config) == data  # deterministic
    for label, item in data.items():
        valid_ids = {doc_id for doc_id, _ in item.valid_documents}
        assert 0 < len(valid_ids) < 40
        valid_doc_numbers = {int(doc_id.split("#")[1]) for doc_id in valid_ids}
        train_doc_numbers = {int(line.split()[2]) for line in item.train}
        assert not valid_doc_numbers & train_doc_numbers  # no document on both sides
        assert train_doc_numbers | valid_doc_numbers == set(range(40))
        assert {int(line.split()[2]) for line in item.valid} == valid_doc_numbers
        assert not set(item.valid) & set(item.train)
        assert item.counts["train_documents"] + item.counts["valid_documents"] == 40
    # the line shared by every document of both labels is claimed by two labels: dropped everywhere
    assert all("boilerplate" not in line for item in data.values() for line in item.train + item.valid)


def test_cross_validation_folds_never_use_the_held_out_split_and_hold_out_every_other_document_once(tmp_path):
    config = many_documents_config(tmp_path)
    test_split = {doc_id for item in build_label_data(config).values() for doc_id, _ in item.valid_documents}
    folds = [build_label_data(config, fold=(fold, 4)) for fold in range(4)]
    scored = [doc_id for data in folds for item in data.values() for doc_id, _ in item.valid_documents]
    every = {f"{label}.jsonl#{d}" for label in ("rand", "wiki") for d in range(40)}
    assert sorted(scored) == sorted(every - test_split) and test_split
    for data in folds:  # no fold trains on a held-out test document (document d's lines name d)
        trained = {f"{label}.jsonl#{line.split()[2]}" for label, item in data.items() for line in item.train}
        assert trained and not trained & test_split
        assert sum(item.counts["train_documents"] + item.counts["valid_documents"] for item in data.values()) \
            == len(every - test_split)


@pytest.mark.parametrize("fold", [None, (0, 4)], ids=["held-out split", "cross-validation fold"])
def test_documents_outside_the_training_side_never_change_the_training_file(tmp_path, fold):
    """A scored document (held-out split; in cross-validation, the scored fold) that repeats a training
    line of another label must not take that line out of training: the file is byte-identical."""
    config = many_documents_config(tmp_path)
    quality = config["quality"]
    documents = {label: [(f"{label}.jsonl#{d}", "\n".join(f"{label} document {d} line {i} with words" for i in range(5)))
                         for d in range(40)] for label in ("rand", "wiki")}

    def scored(text):  # outside the training side of this model
        key = document_split_key(text)
        held_out = is_held_out(quality, "rand", key)
        return held_out if fold is None else not held_out and document_fold(key, fold[1]) == fold[0]

    def trained(text):
        key = document_split_key(text)
        return not is_held_out(quality, "wiki", key) and (fold is None or document_fold(key, fold[1]) != fold[0])

    wiki_id, wiki_text = next(doc for doc in documents["wiki"] if trained(doc[1]))
    repeated = wiki_text.split("\n")[1]  # a training line of wiki
    extra_text = next(text for k in range(10000) if scored(text := f"{repeated}\nan extra rand page line {k} here"))
    with_extra = {**documents, "rand": [*documents["rand"], ("rand-extra.jsonl#0", extra_text)]}

    def training_file(docs, name):
        path = tmp_path / name
        write_labelled(path, training_examples(build_label_data(config, LabelCorpus(config, docs), fold=fold),
                                                     quality["balance"]))
        return path.read_bytes()

    before = training_file(documents, "before.txt")
    assert model_text(repeated).encode() in before
    assert training_file(with_extra, "after.txt") == before


def two_label_documents(copies=()):
    """rand and wiki documents of 6 own lines each (document d's lines name d), plus ``copies``."""
    documents = {label: [(f"{label}.jsonl#{d}", "\n".join(f"{label} document {d} line {i} with words" for i in range(6)))
                         for d in range(40)] for label in ("rand", "wiki")}
    for label, doc_id, text in copies:
        documents[label].append((doc_id, text))
    return documents


@pytest.mark.parametrize("fold", [None, (0, 4), (3, 4)], ids=["held-out split", "fold 0", "fold 3"])
def test_the_same_page_under_two_ids_is_always_on_one_side(tmp_path, fold):
    """The split hashes the normalised text, not the id: a page copied into another file (or differing
    only in case and spacing) is scored with its copy or trained on with it, never both."""
    config = many_documents_config(tmp_path)
    originals = two_label_documents()
    copies = [(label, f"{label}-copy.jsonl#{n}", text.upper().replace(" ", "  "))
              for label, docs in originals.items() for n, (_, text) in enumerate(docs)]
    data = build_label_data(config, LabelCorpus(config, two_label_documents(copies)), fold=fold)
    scored = {doc_id for item in data.values() for doc_id, _ in item.valid_documents}
    assert scored
    for label, docs in originals.items():
        for n, (doc_id, _) in enumerate(docs):
            assert (doc_id in scored) == (f"{label}-copy.jsonl#{n}" in scored)
    assert all(item.counts["valid_documents_left_out"] == 0 for item in data.values())


@pytest.mark.parametrize("fold", [None, (1, 4)], ids=["held-out split", "cross-validation fold"])
def test_a_scored_document_made_only_of_training_lines_is_left_out_and_counted(tmp_path, fold):
    """A page stitched from the lines of other pages (another text, so another split key) is not scored
    when all its lines are in that model's training documents; a page with one new line still is."""
    config = many_documents_config(tmp_path)
    originals = two_label_documents()
    stitched = [("rand", f"rand-mix.jsonl#{d}", "\n".join([*originals["rand"][d][1].split("\n")[:3],
                                                           *originals["rand"][(d + 1) % 40][1].split("\n")[3:]]))
                for d in range(40)]
    with_new_line = [("rand", doc_id.replace("mix", "new"), f"{text}\na line seen in no other document, {doc_id}")
                     for _, doc_id, text in stitched]
    corpus = LabelCorpus(config, two_label_documents([*stitched, *with_new_line]))
    data = build_label_data(config, corpus, fold=fold)
    side_of = document_sides(config, fold)
    sides = {side: [(doc_id, set(lines)) for label, docs in corpus.documents.items()
                    for (doc_id, _), lines, key in zip(docs, corpus.lines[label], corpus.split_keys[label])
                    if side_of(label, key) == side] for side in ("train", "valid")}
    trained_lines = set().union(*(lines for _, lines in sides["train"]))
    scored = {doc_id for item in data.values() for doc_id, _ in item.valid_documents}
    left_out = data["rand"].left_out
    assert any(doc_id.startswith("rand-mix") for doc_id in left_out)  # (an original page may be covered too)
    assert data["rand"].counts["valid_documents_left_out"] == len(left_out) and not data["wiki"].left_out
    assert any(doc_id.startswith("rand-new") for doc_id in scored)  # one unseen line: still scored
    for doc_id, lines in sides["valid"]:  # every validation-side document: scored iff it has an unseen line
        assert (doc_id in scored) == bool(lines - trained_lines) == (doc_id not in left_out)


def test_a_label_can_hold_out_a_larger_share(tmp_path):
    config = many_documents_config(tmp_path)
    config["quality"]["holdout_percent_by_label"] = {"rand": 75}
    counts = {label: item.counts["valid_documents"] for label, item in build_label_data(config).items()}
    assert counts["rand"] > 2 * counts["wiki"] > 0


def test_a_source_can_exclude_records_by_url_and_the_other_ids_stay(tmp_path):
    records = [{"text": "a page", "metadata": {"url": "en.wikipedia.org/wiki/A"}},
               {"text": "another page", "metadata": {"url": "fanwiki.example.com/wiki/B"}},
               {"text": "a third page", "metadata": {"url": "commons.m.wikimedia.org/wiki/C"}}]
    (tmp_path / "cc.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    mapping = load_config("quality_labels")
    source = {"path": "cc.jsonl", "format": "jsonl", "exclude_url": mapping["wikimedia_projects"]}
    assert list(iter_identified_documents(source, tmp_path)) == [("cc.jsonl#1", "another page")]
    assert mapping["labels"]["rand"][0]["exclude_url"] == mapping["wikimedia_projects"]


def test_training_is_balanced_by_oversampling_and_stably_shuffled():
    lines = {"a": [f"line a {i}" for i in range(40)], "b": [f"line b {i}" for i in range(10)]}
    train = balance_train(lines, "oversample")
    assert train == balance_train(lines, "oversample")
    assert sum(1 for label, _ in train if label == "a") == sum(1 for label, _ in train if label == "b") == 40
    assert [label for label, _ in train[:20]] != ["a"] * 20  # interleaved, not grouped
    with pytest.raises(ValueError):
        balance_train({"a": ["x"]}, "undersample")


def test_source_readers_split_unwrap_and_parse_the_new_formats(tmp_path):
    (tmp_path / "book.txt").write_text(
        "Licence header\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\nA line that was\nhard wrapped.\n\n"
        "    Indented new paragraph.\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nLicence footer\n", encoding="utf-8")
    (tmp_path / "wiki.txt").write_text(" = First = \n text one \n = Second = \n text two \n", encoding="utf-8")
    (tmp_path / "news.csv").write_text('"1","Title one","Body one"\n"2","Title two","Body two"\n', encoding="utf-8")
    (tmp_path / "r.sgm").write_text('<REUTERS A="1"><TITLE>T &amp; one</TITLE><BODY>wrapped\nbody\x03</BODY></REUTERS>'
                                    "<REUTERS><TITLE>T two</TITLE></REUTERS>", encoding="latin-1")
    (tmp_path / "dump.xml").write_text(
        "<mediawiki><page><title>Art</title><ns>0</ns><revision><text>'''Art''' is {{cite|x}}[[skill|skills]] & "
        "[[craft]].<ref>r</ref></text></revision></page><page><title>Talk:Art</title><ns>1</ns><revision><text>x"
        "</text></revision></page></mediawiki>", encoding="utf-8")

    def docs(source):
        return list(iter_identified_documents(source, tmp_path))

    assert docs({"path": "book.txt", "format": "text", "gutenberg": True, "unwrap": True}) == [
        ("book.txt#0", "\nA line that was hard wrapped.\n\nIndented new paragraph.\n")]
    wiki = docs({"path": "wiki.txt", "format": "wikitext", "split": "^ = [^=].* = $"})
    assert [text.split("\n")[0] for _, text in wiki] == [" = First = ", " = Second = "]
    assert docs({"path": "news.csv", "format": "csv", "columns": ["n", "title", "body"], "fields": ["title", "body"]}) == [
        ("news.csv#0", "Title one\nBody one"), ("news.csv#1", "Title two\nBody two")]
    reuters = docs({"path": "r.sgm", "format": "sgml_records", "record": "REUTERS", "fields": ["TITLE", "BODY"],
                    "encoding": "latin-1", "unwrap": True})
    assert [text for _, text in reuters] == ["T & one\nwrapped body", "T two"]
    assert docs({"path": "dump.xml", "format": "mediawiki_xml"}) == [("dump.xml#0", "Art\nArt is skills & craft.")]


def test_calibration_chooses_the_threshold_on_one_set_and_reports_on_the_other():
    cc = [0.05, 0.1, 0.2, 0.3, 0.5, 0.6, 0.8, 0.9, 0.95, 1.0]
    assert kept_share(cc, 0.3) == 0.4 and kept_share(cc, 1.0) == 1.0
    assert choose_max_rand(cc, 0.5, 0.01) == 0.5
    report = calibrate(cc, human_good=[0.1, 0.2, 0.7], human_bad=[0.6, 0.9],
                       settings={"target_keep_share": 0.5, "grid_step": 0.01, "dactory_max_rand_score": 0.9})
    assert report["chosen_max_rand_score"] == 0.5
    calibrated = report["rules"]["calibrated"]
    assert calibrated["cc_kept_share"] == 0.5
    assert calibrated["human"] == {"kept_share": 0.4, "precision_good": 1.0, "recall_good": pytest.approx(2 / 3)}
    assert report["rules"]["dactory"]["human"]["kept_share"] == 1.0
    assert len(report["curve"]) == 101 and report["curve"][-1]["cc_kept_share"] == 1.0


def test_a_missing_figure_fails_its_target():
    targets = check_targets({"a": 0.99, "b": 0.5}, {"a": 0.95, "b": 0.7, "c": 0.1})
    assert [targets[name]["passed"] for name in "abc"] == [True, False, False]


def test_fuzzy_examples_are_balanced_distinct_and_conflict_free():
    records = [{"text": f"Menu item {i}", "count": 5, "duplicate": True} for i in range(5)]
    records += [{"text": f"Unique sentence number {i} of the article", "count": 1, "duplicate": False} for i in range(9)]
    records += [{"text": "MENU   item 0", "count": 1, "duplicate": False}]  # same model text as a duplicate
    records += [{"text": "Menu item 1", "count": 5, "duplicate": True}]      # repeated record
    examples = build_examples(records, min_chars=1, max_per_label=100)
    assert len(examples["dup"]) == len(examples["keep"]) == 4
    assert "menu item 0" not in examples["dup"] + examples["keep"]
    with pytest.raises(ValueError):
        build_examples([r for r in records if not r["duplicate"]], 1, 100)


def test_metrics_precision_recall_f1_confusion_and_auc():
    metrics = precision_recall_f1(["a", "a", "b", "b"], ["a", "b", "b", "b"], ["a", "b"])
    assert metrics["confusion"] == [[1, 1], [0, 2]]
    assert metrics["per_label"]["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert metrics["per_label"]["b"]["precision"] == pytest.approx(2 / 3)
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.5], [0.5]) == 0.5
    assert roc_auc([0.1, 0.8], [0.5, 0.9]) == 0.25


def test_wikitext_tokenization_is_undone():
    from moshi_data.classifiers.sources import detokenize_wikitext

    tokenized = (' = = Career = = \n In 2000 he had a guest-starring role ; he portrayed " Scott Parry " in '
                 'the episode , " In Safe Hands " . It \'s a <unk> lobster ( 24 in ) for $ 5 . They did n\'t know .')
    assert detokenize_wikitext(tokenized) == (
        'Career\nIn 2000 he had a guest-starring role; he portrayed "Scott Parry" in the episode, "In Safe Hands". '
        "It's a lobster (24 in) for $5. They didn't know.")


def test_ensure_models_refuses_a_label_corpus_read_with_another_config(tiny_label_sources, tmp_path):
    """The quality model's cache key and training data come from the corpus: one read with other settings
    would train (and name) the model of those settings under this config."""
    from moshi_data.classifiers.models import ensure_models

    config = load_config("classifiers.yaml", [f"models_dir={tmp_path / 'models'}"])
    other = {**tiny_label_sources, "models_dir": str(tmp_path / "models")}
    with pytest.raises(ValueError, match="another config"):
        ensure_models(config, quality_corpus=LabelCorpus(other))
    assert not (tmp_path / "models").exists()  # refused before anything was trained or written


def test_quality_training_is_byte_deterministic_given_the_data(tmp_path):
    """The shipped fastText settings (one thread, fixed seed) give the same model file, byte for byte,
    from the same training data: two trainings (each in its own process) compared."""
    from moshi_data.classifiers.quality import train_quality

    config = many_documents_config(tmp_path)
    assert config["quality"]["train"]["thread"] == 1  # fastText's hogwild threads would race
    data = build_label_data(config)
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    assert train_quality(config, first, data) == train_quality(config, second, build_label_data(config))
    assert first.read_bytes() == second.read_bytes()
    # the comparison can tell models apart: another seed, other bytes (not seed 1: fastText seeds a
    # std::minstd_rand with it, which takes 0 as 1, so seeds 0 and 1 give the same model)
    changed = tmp_path / "changed.bin"
    train_quality({**config, "quality": {**config["quality"], "train": {**config["quality"]["train"], "seed": 2}}},
                  changed, data)
    assert changed.read_bytes() != first.read_bytes()
