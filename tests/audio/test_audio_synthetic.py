"""End to end on espeak-ng two-voice conversations with known words and onsets (shards of the Beam job)."""
from __future__ import annotations

import re

import numpy as np

from moshi_data.pipeline.audio.recording import resolve_repo_path
from moshi_data.pipeline.audio.rttm import read_rttm
from moshi_data.pipeline.audio.text_frames import SentencePieceTokenizer, text_stream
from moshi_data.pipeline.audio.types import FRAME_RATE, Word
from shard_samples import read_samples


def _norm(text: str) -> str:
    return re.sub(r"[^a-z']", "", text.lower())


def _match(words: list[dict], truth) -> list[tuple[dict, object]]:
    """Pair output words with true words of the same text, in order, nearest onset within 0.5 s."""
    pairs, used = [], set()
    for word in words:
        candidates = [(abs(t.start - word["start"]), i) for i, t in enumerate(truth)
                      if i not in used and _norm(t.word) == _norm(word["word"]) and abs(t.start - word["start"]) < 0.5]
        if candidates:
            _, index = min(candidates)
            used.add(index)
            pairs.append((word, truth[index]))
    return pairs


def _sample(run: dict, recording_id: str):
    samples = read_samples(*sorted((run["output"] / "shards").glob("*.tar")))
    found = [s for s in samples if s.meta["recording_id"] == recording_id]
    assert len(found) == 1, [s.key for s in samples]
    return found[0]


def test_mono_conversation_frames_speakers_and_streams(conversation_run, conversation):
    sample = _sample(conversation_run, "mono")
    truth = conversation["truth"]
    pairs = _match(sample.words, truth)
    assert len(pairs) >= 0.7 * len(truth), [w["word"] for w in sample.words]
    onset_errors = [abs(word["start"] - true.start) for word, true in pairs]
    assert np.median(onset_errors) < 0.08

    # speakers: each word carries the label of the diarization turn it overlaps most, and a label
    # never mixes the two voices (diarization may split a voice in two; that is not this stage's job)
    turns = read_rttm((conversation_run["output"] / "annotations" / "mono.rttm").read_text())["mono"]
    for word in sample.words:
        overlaps = {}
        for turn in turns:
            overlaps[turn.speaker] = overlaps.get(turn.speaker, 0.0) + max(0.0, min(word["end"], turn.end) - max(word["start"], turn.start))
        if max(overlaps.values()) > 0:
            assert overlaps[word["speaker"]] == max(overlaps.values()), word
    voices_per_label: dict = {}
    for word, true in pairs:
        voices_per_label.setdefault(word["speaker"], []).append(true.speaker)
    impure = sum(len(v) - max(v.count("A"), v.count("B")) for v in voices_per_label.values())
    assert impure <= 0.1 * len(pairs), voices_per_label
    talk = {label: sum(t.end - t.start for t in turns if t.speaker == label) for label in {t.speaker for t in turns}}
    assert sample.meta["main_speaker"] == max(talk, key=talk.get)  # most talkative

    # Inner Monologue: main words' first tokens sit at the frame of their onset, PAD elsewhere
    tokenizer = SentencePieceTokenizer(str(resolve_repo_path(conversation_run["config"]["text"]["tokenizer"])))
    main_words = [Word(w["word"], w["start"], w["end"], w["score"], w["speaker"]) for w in sample.words
                  if w["speaker"] == sample.meta["main_speaker"]]
    expected = text_stream(main_words, sample.audio.shape[1] / 24_000, tokenizer, 3, 0)
    assert np.array_equal(sample.text, expected)
    assert sample.text.shape == (int(np.ceil(sample.audio.shape[1] / 24_000 * FRAME_RATE)),)
    placed = 0
    for word, true in pairs:
        if word["speaker"] != sample.meta["main_speaker"]:
            continue
        first_token = tokenizer(word["word"].strip())[0]
        true_frame = int(true.start * FRAME_RATE)
        window = sample.text[max(0, true_frame - 1) : true_frame + 2]
        placed += int(first_token in window)
    assert placed >= 0.7 * sum(1 for w, _ in pairs if w["speaker"] == sample.meta["main_speaker"])
    assert (sample.text == 3).mean() > 0.3  # mostly padding, as in real Inner Monologue streams

    # the mask follows the main speaker's turns: main is silent outside them, other inside them
    main_turns = [t for t in turns if t.speaker == sample.meta["main_speaker"]]
    inside = np.zeros(sample.audio.shape[1], dtype=bool)
    for turn in main_turns:
        inside[int(round(turn.start * 24_000)) : int(round(turn.end * 24_000))] = True
    assert not sample.audio[0][~inside].any()
    assert not sample.audio[1][inside].any()
    assert np.abs(sample.audio[0][inside]).max() > 0.1
    assert sample.other_text is not None and (sample.other_text != 3).any()


def test_native_stereo_keeps_channels_and_transcribes_each(conversation_run, conversation):
    sample = _sample(conversation_run, "stereo")
    assert sample.meta["stream_mode"] == "channels"
    assert sample.meta["speakers"] == ["CHANNEL_0", "CHANNEL_1"]
    assert sample.meta["main_speaker"] == "CHANNEL_0"  # voice A (left) says more words
    pairs = _match(sample.words, conversation["truth"])
    assert len(pairs) >= 0.7 * len(conversation["truth"])
    for word, true in pairs:  # speaker comes from the channel: exact
        assert word["speaker"] == ("CHANNEL_0" if true.speaker == "A" else "CHANNEL_1")
    turns = read_rttm((conversation_run["output"] / "annotations" / "stereo.rttm").read_text())["stereo"]
    assert {t.speaker for t in turns} == {"CHANNEL_0", "CHANNEL_1"}
    for word in sample.words:  # channel turns are built from the channel's words
        assert any(t.speaker == word["speaker"] and t.start <= word["start"] < t.end for t in turns)


def test_conversation_run_counts(conversation_run):
    recordings = conversation_run["stats"]["recordings"]
    assert {k: v for k, v in recordings.items() if not k.startswith("annotated")} == {
        "in": 4, "kept": 2, "filtered": {"no_speech": 1}, "rejected": {"decode_error": 1}}
    assert recordings["annotated"] == 3  # every decoded recording, the corrupt one not
