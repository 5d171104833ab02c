"""Calibration of the quality filter: share of real CC documents kept at each ``max_rand_score``.

The rule keeps a document when ``scores["rand"] <= max_rand_score``. The threshold is chosen on one
set of documents and reported on another, so the reported share is not the one it was tuned for:
- choice: the out-of-fold rand scores of the English CC documents (``rand`` label, every document
  scored by a cross-validation model that never saw it); the default is the smallest threshold that
  keeps at least ``target_keep_share`` of them;
- report: the DCLM human-labelled CC documents (never used in training), scored by the shipped model:
  share kept, and how the kept set splits into human good / bad documents.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np


def kept_share(rand_scores: Sequence[float], max_rand_score: float) -> float:
    scores = np.asarray(rand_scores, dtype=np.float64)
    return float((scores <= max_rand_score + 1e-9).mean()) if len(scores) else 0.0


def threshold_grid(step: float) -> list[float]:
    return [round(i * step, 4) for i in range(int(round(1 / step)) + 1)]


def choose_max_rand(rand_scores: Sequence[float], target_share: float, step: float) -> float:
    """Smallest threshold on the grid that keeps at least ``target_share`` of the documents."""
    for threshold in threshold_grid(step):
        if kept_share(rand_scores, threshold) >= target_share:
            return threshold
    return 1.0


def kept_curve(rand_scores: Sequence[float], step: float) -> list[tuple[float, float]]:
    return [(threshold, kept_share(rand_scores, threshold)) for threshold in threshold_grid(step)]


def human_split(good: Sequence[float], bad: Sequence[float], max_rand_score: float) -> dict[str, float]:
    """Share of all documents kept, precision (good among kept) and recall (kept among good)."""
    kept_good = sum(score <= max_rand_score + 1e-9 for score in good)
    kept_bad = sum(score <= max_rand_score + 1e-9 for score in bad)
    kept = kept_good + kept_bad
    return {"kept_share": kept / (len(good) + len(bad)), "precision_good": kept_good / kept if kept else 0.0,
            "recall_good": kept_good / len(good) if good else 0.0}


def calibrate(cc_rand_scores: Sequence[float], human_good: Sequence[float], human_bad: Sequence[float],
              settings: Mapping[str, Any]) -> dict[str, Any]:
    """The chosen threshold, its figures on the report set, dactory's rule, and both curves."""
    step, target = settings["grid_step"], settings["target_keep_share"]
    chosen = choose_max_rand(cc_rand_scores, target, step)
    rules = {"calibrated": chosen, "dactory": settings["dactory_max_rand_score"]}
    return {
        "target_keep_share": target,
        "chosen_max_rand_score": chosen,
        "cc_documents": len(cc_rand_scores),
        "human_documents": {"good": len(human_good), "bad": len(human_bad)},
        "rules": {name: {"max_rand_score": value, "cc_kept_share": kept_share(cc_rand_scores, value),
                         "human": human_split(human_good, human_bad, value)}
                  for name, value in rules.items()},
        "curve": [{"max_rand_score": t, "cc_kept_share": cc, "human_kept_share": human}
                  for (t, cc), (_, human) in zip(kept_curve(cc_rand_scores, step),
                                                 kept_curve([*human_good, *human_bad], step))],
    }


def format_calibration(report: Mapping[str, Any], print_step: float = 0.1) -> str:
    lines = [f"== quality filter calibration: keep rand <= t; t chosen on {report['cc_documents']} English CC "
             f"documents (out-of-fold scores) to keep >= {report['target_keep_share']:.0%}, reported on "
             f"{sum(report['human_documents'].values())} DCLM human-labelled CC documents (shipped model)",
             f"{'t':>6} {'CC kept':>8} {'DCLM kept':>10}"]
    for point in report["curve"]:
        if abs(point["max_rand_score"] / print_step - round(point["max_rand_score"] / print_step)) < 1e-6:
            lines.append(f"{point['max_rand_score']:6.2f} {point['cc_kept_share']:8.1%} {point['human_kept_share']:10.1%}")
    for name, rule in report["rules"].items():
        human = rule["human"]
        lines.append(f"{name} rule rand <= {rule['max_rand_score']}: keeps {rule['cc_kept_share']:.1%} of the CC documents "
                     f"(choice set), {human['kept_share']:.1%} of the DCLM documents (report set; "
                     f"{human['precision_good']:.1%} of the kept are human-good, {human['recall_good']:.1%} of the good are kept)")
    return "\n".join(lines)
