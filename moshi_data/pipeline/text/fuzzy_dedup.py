"""Helium fuzzy line dedup: a fastText duplicate/keep line classifier applied after exact dedup.

A line is flagged when P(dup) >= ``threshold``; only runs of >= ``min_run`` consecutive flagged lines
are removed (the paper's rule: isolated template-looking lines stay). Empty lines are neither scored
nor counted in runs, and are kept.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from moshi_data.pipeline.text.fasttext_model import (
    document_model_lines,
    keep_model_lines,
    load_model,
    model_lines,
    predict_matrix,
)

DUP_LABEL = "dup"
KEEP_LABEL = "keep"


def runs_to_remove(flags: Sequence[bool], min_run: int) -> list[bool]:
    """Mask of the flags that belong to a run of at least ``min_run`` consecutive True values."""
    remove = [False] * len(flags)
    start = None
    for index, flag in enumerate(list(flags) + [False]):
        if flag and start is None:
            start = index
        elif not flag and start is not None:
            if index - start >= min_run:
                remove[start:index] = [True] * (index - start)
            start = None
    return remove


class FuzzyDedupStage:
    """Document stage: drops runs of lines the classifier flags as duplicates (one predict per doc).

    ``cfg``: ``model`` (path), ``threshold``, ``min_run``. Adds the ``fuzzy_dup_lines`` column; never
    drops a whole document itself (a document emptied here is caught by the length filter).
    """

    name = "fuzzy_dedup"

    def __init__(self, cfg: Mapping[str, Any]):
        import pyarrow as pa

        self.model_path = str(cfg["model"])
        self.threshold = float(cfg["threshold"])
        self.min_run = int(cfg["min_run"])
        self.model = None
        self.columns = [pa.field("fuzzy_dup_lines", pa.int32())]

    def setup(self) -> None:
        if self.model is None:
            self.model = load_model(self.model_path)

    def dup_probabilities(self, texts: Sequence[str]) -> list[float]:
        """P(dup) of model texts, in one batched predict call."""
        self.setup()
        return predict_matrix(self.model, list(texts), [DUP_LABEL])[:, 0].tolist()

    def mask_from_texts(self, n_lines: int, positions: Sequence[int], texts: Sequence[str]) -> list[bool]:
        """For each of ``n_lines`` lines: True when removed, given the non-empty ones' positions and texts."""
        flags = [probability >= self.threshold for probability in self.dup_probabilities(texts)]
        mask = [False] * n_lines
        for index, remove in zip(positions, runs_to_remove(flags, self.min_run)):
            mask[index] = remove
        return mask

    def removed_line_mask(self, lines: Sequence[str]) -> list[bool]:
        """For each line: True when fuzzy dedup removes it (a line list outside the job's documents)."""
        return self.mask_from_texts(len(lines), *model_lines(lines))

    def process(self, doc) -> str | None:
        positions, texts = document_model_lines(doc)
        keep = [not flag for flag in self.mask_from_texts(len(doc.lines), positions, texts)]
        doc.fields["fuzzy_dup_lines"] = doc.drop_lines(keep, self.name)
        keep_model_lines(doc, positions, texts, keep)
        return None

    def __getstate__(self):
        return {**self.__dict__, "model": None}
