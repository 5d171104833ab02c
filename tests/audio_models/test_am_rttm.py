"""RTTM writing/reading round trip and error cases."""
import pytest

from moshi_data.pipeline.audio.rttm import read_rttm, write_rttm
from moshi_data.pipeline.audio.types import Turn


def test_round_trip_keeps_overlapping_turns():
    turns = [Turn(0.5, 2.25, "SPEAKER_00"), Turn(2.0, 3.125, "SPEAKER_01"), Turn(4.0, 5.5, "SPEAKER_00")]
    text = write_rttm(turns, "rec01")
    assert text.splitlines()[1] == "SPEAKER rec01 1 2.000 1.125 <NA> <NA> SPEAKER_01 <NA> <NA>"
    assert read_rttm(text) == {"rec01": turns}


def test_read_several_recordings_skips_comments_and_blank_lines(shared_data):
    text = (shared_data / "diarization/pyannote_ami_debug/debug.train.rttm").read_text(encoding="utf-8")
    recordings = read_rttm("# comment\n\n" + text)
    assert sorted(recordings) == [f"trn0{i}" for i in range(10)]
    assert sum(len(v) for v in recordings.values()) == len(text.strip().splitlines())
    assert {t.speaker for t in recordings["trn01"]} == {"FEO066", "MEE068", "FEO065", "MÉO069"}


def test_invalid_input_raises_clear_errors():
    with pytest.raises(ValueError, match="at least 8 fields"):
        read_rttm("SPEAKER rec 1 0.0 1.0\n")
    with pytest.raises(ValueError, match="end <= start"):
        write_rttm([Turn(1.0, 1.0, "A")], "rec")
    with pytest.raises(ValueError, match="whitespace"):
        write_rttm([Turn(0.0, 1.0, "A")], "my rec")
