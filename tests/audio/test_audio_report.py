"""The audio run report: written by the job beside stats.json, self-contained, with its figures; DER and
word timing against references; every image loading in headless Chromium."""
from __future__ import annotations

import json
import re

from browser_check import images_in_browser
from moshi_data.pipeline.audio.report import BINS, recording_report, reference_scores, render_report


def _textgrid(words, duration: float) -> str:
    """A long-format Praat TextGrid with one word tier."""
    lines = ['File type = "ooTextFile"', 'Object class = "TextGrid"', "", "xmin = 0", f"xmax = {duration}",
             "tiers? <exists>", "size = 1", "item []:", "    item [1]:", '        class = "IntervalTier"',
             '        name = "words"', "        xmin = 0", f"        xmax = {duration}", f"        intervals: size = {len(words)}"]
    for index, word in enumerate(words, 1):
        lines += [f"        intervals [{index}]:", f"            xmin = {word.start}", f"            xmax = {word.end}",
                  f'            text = "{word.word}"']
    return "\n".join(lines) + "\n"


def test_report_page_beside_stats(conversation_run):
    output, stats = conversation_run["output"], conversation_run["stats"]
    page = (output / "report.html").read_text("utf-8")
    sources = re.findall(r"src='([^']*)'", page)
    first_shard = min(3, stats["segments"]["kept"])
    assert all(s.startswith("data:image/png;base64,") for s in sources) and len(sources) == 2 + first_shard
    for heading in ("Recordings by outcome", "Segments by outcome", "Speakers per recording", "Filter metrics",
                    "Real-time factor per stage", "Samples"):
        assert f"<h2>{heading}</h2>" in page
    assert "<td>transcribe</td>" in page and "<td>all stages</td>" in page
    for reason, count in stats["recordings"]["rejected"].items():
        assert f"<td>rejected</td><td>{reason}</td><td>{count}</td>" in page
    assert f"{stats['audio_hours']['kept']:.3f} h</b> kept" in page


def test_filtered_segments_carry_their_metrics_into_the_histograms(conversation_run):
    from moshi_data.pipeline.audio.report import merge_reports, recording_report
    from moshi_data.pipeline.audio.recording import RecordingResult

    lines = [json.loads(line) for part in sorted((conversation_run["output"] / "rejects").glob("part-*.jsonl"))
             for line in part.read_text().splitlines()]
    filtered = [line for line in lines if "segment" in line]
    assert all(set(line["metrics"]) >= {"snr_db", "mean_word_confidence", "speech_ratio"} for line in filtered)
    made_up = {"segment": 9, "reason": "low_snr", "metrics": {"snr_db": 1.0, "mean_word_confidence": 0.1, "speech_ratio": 0.05}}
    filtered.append(made_up)  # so the check holds even when the run filtered no segment
    result = RecordingResult("r", "filtered", "no_segment_kept", rejects=filtered)
    report = merge_reports([recording_report(result, conversation_run["config"])])
    with_ratio = [line for line in filtered if line["metrics"]["speech_ratio"] is not None]
    assert sum(report["filtered"]["speech_ratio"]) == len(with_ratio) >= 1
    assert report["filtered"]["snr_db"][0] >= 1  # 1 dB lands in the first SNR bin


def test_recording_contributions_add_up(conversation_run):
    """The merged histograms count every kept sample once (rendered again from a hand merge)."""
    from moshi_data.pipeline.audio.report import merge_reports

    a = {"audio_s": 2.0, "kept": {"snr_db": [1] + [0] * 29}, "speakers_per_recording": {"2": 1}}
    b = {"audio_s": 3.0, "kept": {"snr_db": [0, 2] + [0] * 28}, "speakers_per_recording": {"2": 1, "1": 1}}
    merged = merge_reports([a, b])
    assert merged["audio_s"] == 5.0 and merged["kept"]["snr_db"][:2] == [1, 2]
    assert merged["speakers_per_recording"] == {"2": 2, "1": 1} and len(merged["kept"]["snr_db"]) == BINS["snr_db"][2]
    # floats are summed exactly: any order gives the same bytes (plain float sums differ: 0.6000000000000001)
    x, y, z = ({"der": {"errors_s": value}} for value in (0.1, 0.2, 0.3))
    orders = [merge_reports(order) for order in ([x, y, z], [z, y, x], [y, z, x])]
    assert [total["der"]["errors_s"] for total in orders] == [0.6] * 3 and (0.1 + 0.2) + 0.3 != 0.6
    page = render_report(conversation_run["stats"], merged, conversation_run["config"],
                         stage_seconds={"decode": 0.75, "diarize": 1.0}).decode()
    assert "<td>diarize</td><td>1.00</td><td>0.2000</td>" in page


def test_der_and_word_timing_against_references(conversation, conversation_run, tmp_path):
    output, config = conversation_run["output"], conversation_run["config"]
    truth = conversation["truth"]
    references = tmp_path / "references"
    references.mkdir()
    utterances: list[list] = []  # one reference turn per run of words of one voice
    for word in truth:
        if utterances and utterances[-1][2] == word.speaker:
            utterances[-1][1] = word.end
        else:
            utterances.append([word.start, word.end, word.speaker])
    (references / "mono.rttm").write_text("".join(
        f"SPEAKER mono 1 {start:.3f} {end - start:.3f} <NA> <NA> {speaker} <NA> <NA>\n" for start, end, speaker in utterances))
    (references / "mono.TextGrid").write_text(_textgrid(truth, truth[-1].end + 1))
    rttm = (output / "annotations" / "mono.rttm").read_text()
    words = (output / "annotations" / "mono.words.json").read_text()
    scores = reference_scores("mono", rttm, words, str(references), 0.25, config["evaluation"]["word_tiers"])
    der, timing = scores["der"], scores["word_timing"]
    assert len(utterances) == 3 and der["recordings"] == 1
    assert 0.8 * sum(e - s for s, e, _ in utterances) < der["reference_speech_s"] <= sum(e - s for s, e, _ in utterances)  # collar
    assert 0 <= der["errors_s"] / der["reference_speech_s"] < 0.5  # two espeak voices, told apart
    assert timing["reference_words"] == len(truth) and timing["matched_words"] >= len(truth) // 2
    assert timing["sum_error_s"] / timing["matched_words"] < 0.3
    assert reference_scores("absent", rttm, words, str(references), 0.25, ["words"]) == {}
    page = render_report(conversation_run["stats"], {**scores, "audio_s": 1.0}, config).decode()
    assert "Against the references" in page and "mean onset error" in page


def test_recording_report_of_a_rejected_recording_is_small():
    from moshi_data.pipeline.audio.recording import RecordingResult

    report = recording_report(RecordingResult("bad", "rejected"), {"report": {"references": None}})
    assert json.dumps(report) == '{"audio_s": 0.0}'


def test_every_image_loads_in_chromium(conversation_run):
    images = images_in_browser(conversation_run["output"] / "report.html")
    assert len(images) >= 3
    assert all(image["complete"] and image["width"] > 100 and image["height"] > 100 for image in images), images


def test_report_counts_every_kept_word_and_sample_once(conversation_run):
    from shard_samples import read_samples

    samples = read_samples(*sorted((conversation_run["output"] / "shards").glob("shard-*.tar")))
    report = conversation_run["stats"]["report"]
    assert report["samples"] == len(samples) > 0
    assert report["words_kept"] == sum(len(sample.words) for sample in samples) > 0
    assert sum(report["kept"]["duration_s"]) == len(samples)
