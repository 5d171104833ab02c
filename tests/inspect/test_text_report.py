"""The text run report: funnel with percentages and removals, languages, thresholds on the score
histograms, examples table, self-contained page, exact rebuild, and every image loading in Chromium."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from browser_check import images_in_browser  # noqa: E402
from moshi_data.cli import main as cli  # noqa: E402
from moshi_data.pipeline.config import load_config  # noqa: E402
from moshi_data.pipeline.text.report import _score_bars, funnel_table, thresholds, with_classifier_filter  # noqa: E402


def test_page_is_self_contained_with_funnel_languages_and_examples(text_run):
    output, stats = text_run
    page = (output / "report.html").read_text("utf-8")
    sources = re.findall(r"src='([^']*)'", page)
    assert len(sources) == 3 and all(s.startswith("data:image/png;base64,") for s in sources)  # funnel, LID, quality
    assert not list(output.glob("*.png"))
    assert "removed by this stage" in page and "% of input" in page
    rows = {row[0]: row for row in funnel_table(stats)}
    docs = stats["funnel"]
    assert rows["language"][3] == f"{docs['fuzzy_dedup']['documents'] - docs['language']['documents']:,}"
    detected = stats["language"]["detected"]
    assert sum(detected.values()) == sum(stats["language"]["score_histogram"].values())
    assert f"<td>en</td><td>{detected['en']:,}</td>" in page
    assert "<th>language</th><th>LID score</th>" in page and "<h3>quality_rand</h3>" in page
    # the launcher renders the page again once stats.json has the run's date and wall time
    assert "<td>started</td>" in page and "<td>wall_s</td>" in page and "<td>version</td>" in page and "<td>inputs</td>" in page and "resolved config" in page


def test_thresholds_come_from_the_config_and_are_drawn():
    limits = thresholds(with_classifier_filter(load_config("text_corpus", ["language.threshold=0.7",
                                                                          "quality.filter.min_scores={wiki: 0.2}"])))
    rule = load_config("classifiers")["quality"]["filter"]["max_rand_score"]
    assert limits["language"] == 0.7 and limits["max_rand_score"] == rule and limits["min_scores"] == {"wiki": 0.2}
    figure, axis = plt.subplots()
    _score_bars(axis, {"0.00-0.05": 1, "0.50-0.55": 2, "0.95-1.00": 500}, "red", 0.7, "keep >=")
    assert axis.get_yscale() == "log"  # one bar dominates
    assert [line.get_xdata()[0] for line in axis.get_lines()] == [0.7]
    plt.close(figure)
    figure, axis = plt.subplots()
    _score_bars(axis, {"0.00-0.05": 3, "0.50-0.55": 4}, "red", None, "")
    assert axis.get_yscale() == "linear" and not axis.get_lines()
    plt.close(figure)


def test_text_report_command_rebuilds_the_same_bytes(text_run, tmp_path, capsys):
    output, _ = text_run
    rebuilt = tmp_path / "report.html"
    assert cli(["text-report", "--output", str(output), "--set", "input.docs_per_chunk=50", "--report", str(rebuilt)]) == 0
    assert rebuilt.read_bytes() == (output / "report.html").read_bytes()
    assert cli(["text-report", "--output", str(tmp_path / "nothing")]) == 2


def test_every_image_loads_in_chromium(text_run):
    output, _ = text_run
    images = images_in_browser(output / "report.html")
    assert len(images) == 3
    assert all(image["complete"] and image["width"] > 100 and image["height"] > 100 for image in images), images
