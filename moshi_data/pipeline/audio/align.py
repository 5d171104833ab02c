"""Word-level forced alignment of ASR transcripts.

Offline default: pocketsphinx's bundled en-us acoustic model and CMU dictionary, run as a forced
aligner (``set_align_text``) with wide beams on each ASR segment. ASR tokens are turned into their
spoken form first ("23" -> "twenty three", "5%" -> "five percent"), aligned, and mapped back, so
every original token keeps its text and gets the times of the words it is spoken as.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from moshi_data.pipeline.audio.types import MODEL_SAMPLE_RATE

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
         "fifteen sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_WORDS = {"one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
                  "nine": "ninth", "twelve": "twelfth"}
_SYMBOL_WORDS = {"%": "percent", "&": "and", "+": "plus", "@": "at", "=": "equals", "#": "number",
                 "°": "degrees", "×": "times"}
_CURRENCY_WORDS = {"$": "dollars", "€": "euros", "£": "pounds", "¥": "yen"}


def number_to_words(number: int) -> list[str]:
    """Spell a non-negative integer in English words: 123 -> one hundred twenty three."""
    if number < 20:
        return [_ONES[number]]
    if number < 100:
        tens, ones = divmod(number, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return [_ONES[hundreds], "hundred"] + (number_to_words(rest) if rest else [])
    for scale, name in _SCALES:
        if number >= scale:
            high, rest = divmod(number, scale)
            return number_to_words(high) + [name] + (number_to_words(rest) if rest else [])
    raise ValueError(number)


def year_to_words(year: int) -> list[str]:
    """Spell a 4-digit year the way it is read: 1990 -> nineteen ninety, 2005 -> two thousand five."""
    high, low = divmod(year, 100)
    if year % 1000 < 10:
        return number_to_words(year)
    return number_to_words(high) + (["hundred"] if low == 0 else
                                    (["oh"] + number_to_words(low) if low < 10 else number_to_words(low)))


def ordinal_words(number: int) -> list[str]:
    """Spell an ordinal: 21 -> twenty first."""
    words = number_to_words(number)
    last = words[-1]
    if last in _ORDINAL_WORDS:
        last = _ORDINAL_WORDS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last = last + "th"
    return words[:-1] + [last]


def _digits_to_words(digits: str, as_year: bool) -> list[str]:
    if len(digits) > 15:
        return [w for d in digits for w in number_to_words(int(d))]
    value = int(digits)
    if as_year and len(digits) == 4 and 1100 <= value <= 2099:
        return year_to_words(value)
    if len(digits) > 1 and digits.startswith("0"):
        return [("oh" if d == "0" else _ONES[int(d)]) for d in digits]
    return number_to_words(value)


def _number_token_words(token: str) -> list[str]:
    """Spoken words of a token made of digits with separators (1,000 / 3.5 / 10:30 / 1990s / 21st)."""
    match = re.fullmatch(r"(\d+)(st|nd|rd|th)", token)
    if match:
        return ordinal_words(int(match.group(1)))
    match = re.fullmatch(r"'?(\d+)'?s", token)
    if match:  # 1990s, 90s
        words = _digits_to_words(match.group(1), as_year=True)
        last = words[-1]
        words[-1] = last[:-1] + "ies" if last.endswith("y") else last + "s"
        return words
    if re.fullmatch(r"\d{1,3}(,\d{3})+", token):
        return number_to_words(int(token.replace(",", "")))
    match = re.fullmatch(r"(\d+)\.(\d+)", token)
    if match:
        return (_digits_to_words(match.group(1), as_year=False) + ["point"]
                + [w for d in match.group(2) for w in number_to_words(int(d))])
    match = re.fullmatch(r"(\d{1,2}):(\d{2})", token)
    if match:
        minutes = int(match.group(2))
        tail = [] if minutes == 0 else (["oh"] + number_to_words(minutes) if minutes < 10
                                        else number_to_words(minutes))
        return number_to_words(int(match.group(1))) + tail
    words: list[str] = []
    for part in re.findall(r"\d+|[a-z']+", token):
        words += _digits_to_words(part, as_year=True) if part.isdigit() else [part]
    return words


def spoken_words(token: str) -> list[str]:
    """Lower-case dictionary words a transcript token is spoken as; [] for pure punctuation."""
    text = token.lower().replace("’", "'").replace("‘", "'")
    words: list[str] = []
    currency = None
    for char, name in _CURRENCY_WORDS.items():
        if char in text:
            currency = name
            text = text.replace(char, " ")
    for char, name in _SYMBOL_WORDS.items():
        text = text.replace(char, f" {name} ")
    for piece in re.split(r"[\s\-/]+", text):
        piece = re.sub(r"^[^\w]+|[^\w]+$", "", piece)  # strip punctuation at the edges
        piece = re.sub(r"[^\w'.,:]", "", piece)
        if not piece:
            continue
        if re.search(r"\d", piece):
            words += _number_token_words(piece)
        else:
            words += [w for w in re.split(r"[.,:]+", piece) if w and w != "'"]
    if currency and words:
        words.append(currency)
    return words


# Rough English letter-to-sound rules (CMU/ARPAbet phones of the en-us model) for words missing
# from the dictionary; good enough for forced alignment, which only needs a plausible phone count.
_GRAPHEME_PHONES = (
    ("tch", "CH"), ("sch", "S K"), ("igh", "AY"), ("ough", "AO"), ("augh", "AO"),
    ("ch", "CH"), ("sh", "SH"), ("th", "TH"), ("ph", "F"), ("wh", "W"), ("ck", "K"), ("ng", "NG"),
    ("qu", "K W"), ("ee", "IY"), ("ea", "IY"), ("oo", "UW"), ("ou", "AW"), ("ow", "OW"), ("oi", "OY"),
    ("oy", "OY"), ("ai", "EY"), ("ay", "EY"), ("au", "AO"), ("aw", "AO"), ("ie", "IY"), ("ei", "EY"),
    ("ey", "IY"), ("ew", "UW"), ("ue", "UW"), ("oa", "OW"), ("kn", "N"), ("wr", "R"), ("gh", "G"),
    ("a", "AE"), ("b", "B"), ("c", "K"), ("d", "D"), ("e", "EH"), ("f", "F"), ("g", "G"), ("h", "HH"),
    ("i", "IH"), ("j", "JH"), ("k", "K"), ("l", "L"), ("m", "M"), ("n", "N"), ("o", "AA"), ("p", "P"),
    ("q", "K"), ("r", "R"), ("s", "S"), ("t", "T"), ("u", "AH"), ("v", "V"), ("w", "W"), ("x", "K S"),
    ("y", "Y"), ("z", "Z"),
)


def letters_to_phones(word: str) -> str:
    """Approximate ARPAbet pronunciation of an out-of-dictionary word (greedy grapheme rules)."""
    letters = re.sub(r"[^a-z]", "", word.lower())
    if len(letters) > 1 and letters.endswith("e") and not letters.endswith(("ee", "ie", "ye")):
        letters = letters[:-1]  # silent final e
    phones: list[str] = []
    position = 0
    while position < len(letters):
        for graphemes, phone in _GRAPHEME_PHONES:
            if letters.startswith(graphemes, position):
                if not phones or phones[-1] != phone:  # doubled consonants are one phone
                    phones.extend(phone.split())
                position += len(graphemes)
                break
        else:
            position += 1
    return " ".join(phones) if phones else "AH"


@dataclass(frozen=True)
class TokenTiming:
    """Times (seconds, absolute) of one transcript token."""

    start: float
    end: float


def tokens_to_spoken(tokens: Sequence[str]) -> tuple[list[str], list[int]]:
    """Spoken words of all tokens plus, for each spoken word, the index of its token."""
    spoken: list[str] = []
    owner: list[int] = []
    for index, token in enumerate(tokens):
        for word in spoken_words(token):
            spoken.append(word)
            owner.append(index)
    return spoken, owner


def interpolate_missing(timings: list[Optional[TokenTiming]], tokens: Sequence[str], start: float,
                        end: float, min_duration: float) -> list[TokenTiming]:
    """Fill tokens without times by sharing the gap between timed neighbours by character count."""
    result = list(timings)
    index = 0
    while index < len(result):
        if result[index] is not None:
            index += 1
            continue
        run_end = index
        while run_end < len(result) and result[run_end] is None:
            run_end += 1
        gap_start = result[index - 1].end if index > 0 else start
        gap_end = result[run_end].start if run_end < len(result) else end
        if gap_end - gap_start < min_duration * (run_end - index):
            gap_end = gap_start + min_duration * (run_end - index)
        weights = np.array([max(len(tokens[i]), 1) for i in range(index, run_end)], dtype=float)
        edges = gap_start + (gap_end - gap_start) * np.concatenate([[0.0], np.cumsum(weights) / weights.sum()])
        for offset, i in enumerate(range(index, run_end)):
            result[i] = TokenTiming(float(edges[offset]), float(edges[offset + 1]))
        index = run_end
    return result


def enforce_min_duration(timings: list[TokenTiming], min_duration: float) -> list[TokenTiming]:
    """Make every token last at least ``min_duration`` (start < end always)."""
    return [t if t.end - t.start >= min_duration else TokenTiming(t.start, t.start + min_duration)
            for t in timings]


class PocketsphinxAligner:
    """Forced alignment with pocketsphinx's en-us model (offline, shipped in the wheel)."""

    def __init__(self, config: dict):
        self.config = config
        self._decoder = None

    def setup(self) -> None:
        from pocketsphinx import Decoder

        beams = self.config["pocketsphinx"]
        self._decoder = Decoder(samprate=MODEL_SAMPLE_RATE, bestpath=False, loglevel="FATAL",
                                beam=float(beams["beam"]), wbeam=float(beams["wbeam"]),
                                pbeam=float(beams["pbeam"]))

    def _ensure_in_dictionary(self, words: Sequence[str]) -> None:
        for word in set(words):
            if self._decoder.lookup_word(word) is None:
                self._decoder.add_word(word, letters_to_phones(word), True)

    def align_words(self, audio: np.ndarray, offset: float, words: Sequence[str]) -> Optional[list[TokenTiming]]:
        """Times of ``words`` (dictionary words, in order) spoken in ``audio``; None if alignment fails."""
        if self._decoder is None:
            self.setup()
        if not words or audio.size < MODEL_SAMPLE_RATE // 10:
            return None
        self._ensure_in_dictionary(words)
        frame_rate = float(self.config["pocketsphinx"]["frame_rate"])
        pcm = (np.clip(audio, -1.0, 1.0) * 32767).astype(np.int16).tobytes()
        try:
            self._decoder.set_align_text(" ".join(words))
            self._decoder.start_utt()
            self._decoder.process_raw(pcm, full_utt=True)
            self._decoder.end_utt()
        except RuntimeError:
            return None
        segments = self._decoder.seg()
        if segments is None:  # no path through the grammar: alignment failed
            return None
        aligned = [(seg.word.split("(")[0], seg.start_frame, seg.end_frame) for seg in segments
                   if seg.word not in ("<s>", "</s>", "<sil>", "[NOISE]")]
        if [w for w, _, _ in aligned] != list(words):
            return None
        return [TokenTiming(offset + start / frame_rate, offset + (end + 1) / frame_rate)
                for _, start, end in aligned]


def merge_spoken_timings(spoken_timings: Sequence[TokenTiming], owner: Sequence[int],
                         num_tokens: int) -> list[Optional[TokenTiming]]:
    """Times of each token = first start / last end of its spoken words (None if it has none)."""
    result: list[Optional[TokenTiming]] = [None] * num_tokens
    for timing, index in zip(spoken_timings, owner):
        current = result[index]
        result[index] = timing if current is None else TokenTiming(current.start, timing.end)
    return result
