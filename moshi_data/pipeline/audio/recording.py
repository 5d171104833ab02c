"""One recording through stages 1-9: decode, ASR, diarization, assignment, streams, text, segments, filters.

:class:`RecordingProcessor` is the single implementation used by the Beam job, the benchmark and the
tests: ``setup()`` loads the models (once per worker), ``process(source)`` returns a
:class:`RecordingResult` holding encoded shard records, the recording's annotations, its rejects and
integer counters (so that sums are exact in any order). Per-stage wall times accumulate in
``timings`` for the benchmark; they never reach the outputs.
"""
from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from moshi_data.pipeline.audio.assign import assign_speakers
from moshi_data.pipeline.audio.decode import AudioRejected, AudioSource, DecodedAudio, decode
from moshi_data.pipeline.audio.filters import check_recording, check_segment
from moshi_data.pipeline.audio.segment import plan_segments, speech_intervals, turns_in_segment, words_in_segment
from moshi_data.pipeline.audio.shards import Sample, decode_sample, encode_sample, sample_key
from moshi_data.pipeline.audio.streams import (channel_streams, choose_main_speakers, mask_streams, one_talker_per_channel,
                                              validate_main_speaker_policy)
from moshi_data.pipeline.audio.text_frames import SentencePieceTokenizer, text_stream
from moshi_data.pipeline.audio.types import FRAME_RATE, MODEL_SAMPLE_RATE, OUTPUT_SAMPLE_RATE, Turn, Word
from moshi_data.pipeline.config import REPO_ROOT, deep_merge, load_config
from moshi_data.pipeline.models import name_as_configured

STAGES = ("decode", "transcribe", "diarize", "assign", "streams", "text", "segment", "filter", "encode", "codes")


@dataclass
class RecordingResult:
    """Everything the job writes for one recording."""

    recording_id: str
    outcome: str  # kept | filtered | rejected
    reason: Optional[str] = None
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (key, encoded sample)
    rttm: Optional[str] = None
    words_json: Optional[str] = None
    rejects: list[dict[str, Any]] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)


def words_to_turns(words: Sequence[Word], speaker: str, max_gap_s: float) -> list[Turn]:
    """Turns of one talker from their words: words closer than ``max_gap_s`` join one turn."""
    turns: list[list[float]] = []
    for word in sorted(words, key=lambda w: (w.start, w.end)):
        if turns and word.start - turns[-1][1] <= max_gap_s:
            turns[-1][1] = max(turns[-1][1], word.end)
        else:
            turns.append([word.start, word.end])
    return [Turn(round(s, 3), round(e, 3), speaker) for s, e in turns if e > s]


def rttm_uri(recording_id: str) -> str:
    """RTTM uri of a recording (whitespace is not allowed in RTTM fields)."""
    return "_".join(recording_id.split()) or "_"


def resolve_repo_path(path: str) -> Path:
    candidate = Path(path)
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def codec_settings(config: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """Mimi settings for ``codes.npy`` (keys of ``pipeline.audio.codec.load_codec``), or None when ``codes.enabled`` is off.

    They are the ``codec`` section of the ``codes.codec_config`` config (the trainer's, so stored and
    on-the-fly codes come from the same Mimi) with ``codes.codec`` merged over it.
    """
    codes = config["codes"]
    if not codes["enabled"]:
        return None
    return deep_merge(load_config(codes["codec_config"])["codec"], codes["codec"] or {})


def codec_version(codec: Any) -> str:
    """``model_versions`` entry of the Mimi that wrote ``codes.npy``; the offline stand-in is flagged."""
    if codec.pretrained:
        return f"{codec.source} ({codec.num_codebooks} codebooks per stream)"
    return (f"{codec.source} ({codec.num_codebooks} codebooks per stream) RANDOM STAND-IN: "
            "not the released Mimi's codes")


@dataclass
class _Analysis:
    """Model outputs of a recording, in recording time."""

    mode: str  # mask | channels
    words: list[Word]
    turns: list[Turn]
    speakers: list[str]
    language: Optional[str]
    language_probability: Optional[float]
    model_versions: dict[str, str]


class RecordingProcessor:
    """Stages 1-9 for one recording at a time; picklable before ``setup()``.

    ``model_names``: {a model path in ``config``: the name the user gave it} where ``config`` names a
    copy (a remote worker's cached download of a staged model: ``models.configured_names``); meta.json's
    ``model_versions`` show the given names, so every runner writes the same bytes.
    """

    def __init__(self, config: Mapping[str, Any], model_names: Optional[Mapping[str, str]] = None):
        self.config = dict(config)
        self.model_names = dict(model_names or {})
        validate_main_speaker_policy(self.config["streams"]["main_speaker"])
        self.transcriber = None
        self.diarizer = None
        self.tokenizer: Optional[SentencePieceTokenizer] = None
        self.tokenizer_version = ""
        self.codec = None  # pipeline.audio.codec.Codec when codes.enabled
        self.timings: Counter = Counter()

    def __getstate__(self) -> dict:
        return {"config": self.config, "model_names": self.model_names, "transcriber": None, "diarizer": None,
                "tokenizer": None, "tokenizer_version": "", "codec": None, "timings": Counter()}

    def setup(self) -> None:
        """Load ASR, diarization, the tokenizer and (with ``codes.enabled``) Mimi."""
        from moshi_data.pipeline.audio.diarize import Diarizer
        from moshi_data.pipeline.audio.transcribe import Transcriber

        tokenizer_path = resolve_repo_path(self.config["text"]["tokenizer"])
        if not tokenizer_path.exists():
            raise FileNotFoundError(f"text.tokenizer {tokenizer_path} missing: run `make tokenizer`")
        self.tokenizer = SentencePieceTokenizer(str(tokenizer_path))
        # by content only: a remote worker's copy has a staged name, and outputs must not depend on the runner
        self.tokenizer_version = f"sentencepiece sha256:{file_digest(tokenizer_path)}"
        self.transcriber = Transcriber(self.config)
        self.transcriber.setup()
        self.diarizer = Diarizer(self.config)
        self.diarizer.setup()
        settings = codec_settings(self.config)
        if settings is not None:
            from moshi_data.pipeline.audio.codec import load_codec  # torch + moshi: imported only when codes are on

            self.codec = load_codec(settings)

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[stage] += time.perf_counter() - start

    # ------------------------------------------------------------------ per recording
    def process(self, source: AudioSource) -> RecordingResult:
        """Run every stage on one recording; bad input gives a rejected result, never an exception."""
        if self.transcriber is None:
            self.setup()
        result = RecordingResult(source.recording_id, "rejected")
        result.counters["recordings_in"] += 1
        try:
            with self._timed("decode"):
                audio = decode(source.path, self.config["ingest"])
        except AudioRejected as error:
            return self._reject(result, source, error.reason, error.detail)
        except Exception as error:  # noqa: BLE001 - any decoder failure is a counted reject, the run goes on
            return self._reject(result, source, "decode_error", f"{type(error).__name__}: {error}")
        result.counters["audio_samples_in"] += audio.audio24.shape[1]
        if "downmixed_from_channels" in audio.info:
            result.counters["downmixed_multichannel"] += 1
        if audio.info["sample_rate"] < OUTPUT_SAMPLE_RATE:
            result.counters["upsampled"] += 1
        analysis = self._analyse(source, audio)
        result.rttm = _rttm_text(analysis.turns, source.recording_id)
        result.words_json = "[\n" + ",\n".join(
            json.dumps({"word": w.word, "start": w.start, "end": w.end, "speaker": w.speaker}, ensure_ascii=False)
            for w in analysis.words
        ) + "\n]\n"
        verdict = check_recording(analysis.language, analysis.language_probability, len(analysis.words), self.config["filters"])
        if verdict.reason is not None:
            result.outcome, result.reason = "filtered", verdict.reason
            result.rejects.append(_reject_line(source, "filter", verdict.reason, verdict.detail))
            return result
        self._segments(source, audio, analysis, result)
        if not result.records:
            result.outcome, result.reason = "filtered", "no_segment_kept"
            result.rejects.append(_reject_line(source, "filter", "no_segment_kept", "every segment was filtered"))
        else:
            result.outcome = "kept"
        return result

    def _reject(self, result: RecordingResult, source: AudioSource, reason: str, detail: str) -> RecordingResult:
        result.outcome, result.reason = "rejected", reason
        result.rejects.append(_reject_line(source, "decode", reason, detail))
        return result

    def _stereo_channels(self, source: AudioSource, audio: DecodedAudio) -> bool:
        if audio.audio16.shape[0] != 2:
            return False
        if source.speakers is not None and len(source.speakers) == 2:
            return True
        mode = self.config["streams"]["stereo"]
        if mode == "auto":
            streams = self.config["streams"]
            return one_talker_per_channel(audio.audio16, MODEL_SAMPLE_RATE, streams["stereo_max_correlation"], streams["stereo_min_dominance_db"])
        return mode == "channels"

    def _analyse(self, source: AudioSource, audio: DecodedAudio) -> _Analysis:
        streams = self.config["streams"]
        versions: dict[str, str] = {"tokenizer": self.tokenizer_version}
        if self.codec is not None:
            versions["mimi"] = codec_version(self.codec)
        if self._stereo_channels(source, audio):
            names = list(source.speakers or streams["channel_speakers"])
            words: list[Word] = []
            turns: list[Turn] = []
            languages = []
            for channel, speaker in enumerate(names):
                with self._timed("transcribe"):
                    transcription = self.transcriber.transcribe(audio.audio16[channel])
                channel_words = [replace(w, speaker=speaker) for w in transcription.words]
                words += channel_words
                with self._timed("assign"):
                    turns += words_to_turns(channel_words, speaker, streams["turn_merge_gap_s"])
                languages.append((len(channel_words), transcription.language, transcription.language_probability))
                versions.update(transcription.model_versions)
            versions["diarization"] = "native stereo: one talker per channel"
            _, language, probability = max(languages, key=lambda item: item[0])
            words.sort(key=lambda w: (w.start, w.end, w.speaker or ""))
            return _Analysis("channels", words, sorted(turns, key=lambda t: (t.start, t.end, t.speaker)), names,
                             language, probability, self.as_configured(versions))
        mono16 = audio.audio16.mean(axis=0) if audio.audio16.shape[0] > 1 else audio.audio16[0]
        with self._timed("transcribe"):
            transcription = self.transcriber.transcribe(mono16)
        with self._timed("diarize"):
            turns = sorted(self.diarizer.diarize(mono16), key=lambda t: (t.start, t.end, t.speaker))
        versions.update(transcription.model_versions)
        versions.update(self.diarizer.model_versions)
        with self._timed("assign"):
            words = assign_speakers(transcription.words, turns, streams["default_speaker"])
            if not turns and words:  # no diarization turn at all: one speaker, turns from the words
                turns = words_to_turns(words, streams["default_speaker"], streams["turn_merge_gap_s"])
        speakers = sorted({t.speaker for t in turns} | {w.speaker for w in words if w.speaker})
        return _Analysis("mask", words, turns, speakers, transcription.language, transcription.language_probability,
                         self.as_configured(versions))

    def as_configured(self, versions: Mapping[str, str]) -> dict[str, str]:
        """``versions`` with every local model copy named as configured (``model_names``)."""
        return {stage: name_as_configured(version, self.model_names) for stage, version in versions.items()}

    def _segments(self, source: AudioSource, audio: DecodedAudio, analysis: _Analysis, result: RecordingResult) -> None:
        config = self.config
        streams_config = config["streams"]
        with self._timed("segment"):
            duration = audio.audio24.shape[1] / OUTPUT_SAMPLE_RATE
            segments = plan_segments(duration, analysis.turns, analysis.words, config["segment"]["max_duration_s"],
                                     config["segment"]["min_silence_s"], config["segment"]["min_cut_s"])
        for segment in segments:
            result.counters["segments_in"] += 1
            result.counters[f"segment_cut_{segment.cut}"] += 1
            first = int(round(segment.start * OUTPUT_SAMPLE_RATE))
            last = min(audio.audio24.shape[1], int(round(segment.end * OUTPUT_SAMPLE_RATE)))
            window = audio.audio24[:, first:last]
            words = words_in_segment(analysis.words, segment)
            turns = turns_in_segment(analysis.turns, segment)
            with self._timed("filter"):
                verdict = check_segment(window, OUTPUT_SAMPLE_RATE, segment.duration, words,
                                        speech_intervals(turns, words), config["filters"])
                mains = choose_main_speakers(analysis.speakers, turns, words, streams_config["main_speaker"],
                                             float(streams_config["min_main_speech_s"]),
                                             int(streams_config["min_main_words"]),
                                             f"{source.recording_id}:{segment.index}", int(streams_config["seed"]))
            reason, detail = (verdict.reason, verdict.detail) if verdict.reason else (mains.reason, mains.detail)
            if reason is not None:
                result.counters[f"segments_filtered_{reason}"] += 1
                line = _reject_line(source, "filter", reason, detail)
                line.update({"segment": segment.index, "start": segment.start, "end": round(segment.end, 6),
                             "metrics": verdict.metrics})  # the run report's histograms of filtered segments
                result.rejects.append(line)
                continue
            result.counters["segments_kept"] += 1
            result.counters["samples_kept_24k"] += last - first
            several = streams_config["main_speaker"] == "each"
            for main in mains.speakers:
                key = sample_key(source.recording_id, segment.index)
                if several:
                    key += f"_{analysis.speakers.index(main):02d}"
                self._sample(key, source, audio, analysis, segment, (first, last), window, words, turns, main,
                             verdict, mains, result)

    def _sample(self, key: str, source: AudioSource, audio: DecodedAudio, analysis: _Analysis, segment, bounds,
                window: np.ndarray, words: list[Word], turns: list[Turn], main: str, verdict, mains,
                result: RecordingResult) -> None:
        """Write one sample of a kept segment with ``main`` as the main speaker."""
        text_config = self.config["text"]
        first, last = bounds
        with self._timed("streams"):
            if analysis.mode == "channels":
                stereo = channel_streams(window, analysis.speakers.index(main))
            else:
                mono = window.mean(axis=0) if window.shape[0] > 1 else window[0]
                stereo = mask_streams(mono, turns, main, OUTPUT_SAMPLE_RATE)
        with self._timed("text"):
            main_words = [w for w in words if w.speaker == main]
            other_words = [w for w in words if w.speaker != main]
            seconds = (last - first) / OUTPUT_SAMPLE_RATE  # frames from the sample count, as Mimi's
            text = text_stream(main_words, seconds, self.tokenizer, text_config["pad_id"],
                               text_config["epad_id"], FRAME_RATE, text_config["keep_and_shift"])
            other_text = (text_stream(other_words, seconds, self.tokenizer, text_config["pad_id"],
                                      text_config["epad_id"], FRAME_RATE, text_config["keep_and_shift"])
                          if text_config["other_stream"] else None)
            text_all = (text_stream(words, seconds, self.tokenizer, text_config["pad_id"],
                                    text_config["epad_id"], FRAME_RATE, text_config["keep_and_shift"])
                        if text_config["all_stream"] else None)
        meta = {
            "recording_id": source.recording_id,
            "source": source.path,
            "segment_index": segment.index,
            "offset_s": round(segment.start, 6),
            "end_s": round(segment.end, 6),
            "offset_samples": first,
            "duration_s": round((last - first) / OUTPUT_SAMPLE_RATE, 6),
            "recording_duration_s": round(audio.audio24.shape[1] / OUTPUT_SAMPLE_RATE, 6),
            "cut": segment.cut,
            "main_speaker": main,
            "main_speaker_policy": self.config["streams"]["main_speaker"],
            "main_speech_s": mains.speech_s[main],
            "main_words": mains.words[main],
            "speakers": analysis.speakers,
            "stream_mode": analysis.mode,
            "sample_rate": OUTPUT_SAMPLE_RATE,
            "frame_rate": FRAME_RATE,
            "text": {"pad_id": text_config["pad_id"], "epad_id": text_config["epad_id"],
                     "keep_and_shift": text_config["keep_and_shift"]},
            "language": analysis.language,
            "language_probability": analysis.language_probability,
            "source_audio": {k: audio.info[k] for k in sorted(audio.info)},
            "filters": verdict.metrics,
            "model_versions": analysis.model_versions,
        }
        sample = Sample(
            key=key,
            audio=stereo,
            words=[{"word": w.word, "start": w.start, "end": w.end, "speaker": w.speaker, "score": w.score} for w in words],
            text=text,
            other_text=other_text,
            text_all=text_all,
            meta=meta,
        )
        with self._timed("encode"):
            record = encode_sample(sample)
        if self.codec is not None:
            with self._timed("codes"):
                record["codes.npy"] = self._codes(record)
        result.records.append((sample.key, record))
        result.counters["samples_kept"] += 1

    def _codes(self, record: dict[str, Any]) -> bytes:
        """``codes.npy`` bytes of a record: Mimi codes of its audio as stored (decoded from its 16-bit FLAC).

        The audio goes through ``decode_sample`` and ``encode_streams``, as in the trainer's on-the-fly
        path, so stored and on-the-fly codes are equal (encoding the float audio flips ~0.5 % of codes).
        Mimi runs on ``codec.threads`` threads whatever the job's ``cpu_threads`` (codes at float near-ties
        depend on the thread count).
        """
        from moshi_data.pipeline.audio.codec import encode_streams

        stored = decode_sample(record)
        buffer = io.BytesIO()
        np.save(buffer, encode_streams(self.codec, stored.audio, stored.sample_rate), allow_pickle=False)
        return buffer.getvalue()


def _rttm_text(turns: Sequence[Turn], recording_id: str) -> str:
    from moshi_data.pipeline.audio.rttm import write_rttm

    return write_rttm([t for t in turns if t.end > t.start], rttm_uri(recording_id))


def _reject_line(source: AudioSource, stage: str, reason: str, detail: str) -> dict[str, Any]:
    return {"id": source.recording_id, "path": source.path, "stage": stage, "reason": reason, "detail": detail}
