"""Document-level language identification with a fastText LID model (lid.176.bin / .ftz)."""
from __future__ import annotations

from moshi_data.pipeline.models import resolve_model
from moshi_data.pipeline.text.document import Document

LABEL_PREFIX = "__label__"


def load_fasttext(path: str):
    """Load a fastText model file, silencing the library's deprecation notice on stderr."""
    import fasttext

    fasttext.FastText.eprint = lambda *args, **kwargs: None
    return fasttext.load_model(path)


def score_bucket(score: float, width: float) -> str:
    low = min(int(score / width), int(round(1 / width)) - 1) * width
    return f"{low:.2f}-{low + width:.2f}"


class LanguageIdStage:
    """Keep documents whose top fastText language is a target language with score >= threshold.

    Filter reasons: ``language`` (top language is not a target) and ``language_score`` (target
    language below the threshold). Sets ``doc.language`` and ``doc.language_score``.
    """

    name = "language"
    columns: list = []

    def __init__(self, cfg: dict):
        self.model_spec = cfg["model"]
        self.languages = set(cfg["languages"])
        self.threshold = float(cfg["threshold"])
        self.model = None

    def setup(self) -> None:
        if self.model is None:
            self.model = load_fasttext(str(resolve_model(self.model_spec)))

    def predict(self, text: str) -> tuple[str, float]:
        labels, scores = self.model.predict(text.replace("\n", " "), k=1)
        if not labels:
            return "", 0.0
        return labels[0][len(LABEL_PREFIX):], float(min(scores[0], 1.0))

    def process(self, doc: Document) -> str | None:
        doc.language, doc.language_score = self.predict(" ".join(doc.lines))
        if doc.language not in self.languages:
            return "language"
        if doc.language_score < self.threshold:
            return "language_score"
        return None

    def __getstate__(self):
        return {**self.__dict__, "model": None}
