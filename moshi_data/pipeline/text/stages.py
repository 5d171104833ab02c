"""The per-document stage chain of the text job, built from config.

Exact line dedup runs first (it needs the group-wide counts, see ``line_dedup``); then the stages
named in ``config["stages"]`` run in that order. To add a stage: implement the ``DocumentStage``
protocol (``pipeline/text/document.py``), register its class here under a name, add the name to
``stages:`` in ``configs/text_corpus.yaml`` and its settings under the same key.
"""
from __future__ import annotations

import time
from collections import Counter

from moshi_data.pipeline.text.accounting import add_to_funnel
from moshi_data.pipeline.text.document import Document, DocumentStage
from moshi_data.pipeline.text.fuzzy_dedup import FuzzyDedupStage
from moshi_data.pipeline.text.langid import LanguageIdStage
from moshi_data.pipeline.text.length import MinLengthStage
from moshi_data.pipeline.text.quality import QualityStage

STAGES: dict[str, type] = {
    "fuzzy_dedup": FuzzyDedupStage,
    "language": LanguageIdStage,
    "quality": QualityStage,
    "min_length": MinLengthStage,
}

EXACT_DEDUP = "exact_dedup"


def build_stages(config: dict) -> list[DocumentStage]:
    """Instantiate the configured stages, in order (each reads ``config[<stage name>]``)."""
    unknown = [name for name in config["stages"] if name not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; known: {sorted(STAGES)}")
    return [STAGES[name](config[name]) for name in config["stages"]]


def run_stages(doc: Document, stages: list[DocumentStage], seconds: Counter | None = None,
               tally: Counter | None = None) -> str | None:
    """Run the chain on one document; returns the filter reason of the stage that dropped it, if any.

    Records ``doc.line_counts[stage]`` after each stage that ran; ``seconds`` (optional) gets the
    time spent per stage; ``tally`` (optional) gets the funnel (documents, lines, bytes after each stage).
    """
    for stage in stages:
        start = time.perf_counter()
        reason = stage.process(doc)
        if seconds is not None:
            seconds[stage.name] += time.perf_counter() - start
        doc.line_counts[stage.name] = len(doc.lines)
        if reason is not None:
            return reason
        if tally is not None:
            add_to_funnel(tally, stage.name, doc)
    return None
