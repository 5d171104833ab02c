"""Calibration of the quality filter: share of real CC documents kept at each ``max_rand_score``.

The rule keeps a document when ``scores["rand"] <= max_rand_score``. The threshold is chosen on one
set of documents and reported on another, so the reported share is not the one it was tuned for:
- choice: the out-of-fold rand scores of the English CC documents outside the held-out test split
  (``rand`` label, every document scored by a cross-validation model that never saw it); the default
  is the smallest threshold that keeps at least ``target_keep_share`` of them;
- report: the English CC documents of the held-out test split and the DCLM human-labelled CC
  documents (neither trained on), scored by the shipped model: share kept, and how the kept DCLM
  documents split into human good / bad.
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
              settings: Mapping[str, Any], held_out_cc: Sequence[float] = ()) -> dict[str, Any]:
    """The chosen threshold, its figures on the report sets (DCLM; ``held_out_cc``: the English CC
    documents of the held-out test split, shipped model), dactory's rule, and the curves."""
    step, target = settings["grid_step"], settings["target_keep_share"]
    chosen = choose_max_rand(cc_rand_scores, target, step)
    rules = {"calibrated": chosen, "dactory": settings["dactory_max_rand_score"]}
    return {
        "target_keep_share": target,
        "chosen_max_rand_score": chosen,
        "cc_documents": len(cc_rand_scores),
        "held_out_cc_documents": len(held_out_cc),
        "human_documents": {"good": len(human_good), "bad": len(human_bad)},
        "rules": {name: {"max_rand_score": value, "cc_kept_share": kept_share(cc_rand_scores, value),
                         "held_out_cc_kept_share": kept_share(held_out_cc, value),
                         "human": human_split(human_good, human_bad, value)}
                  for name, value in rules.items()},
        "curve": [{"max_rand_score": t, "cc_kept_share": cc, "held_out_cc_kept_share": held, "human_kept_share": human}
                  for (t, cc), (_, held), (_, human) in zip(kept_curve(cc_rand_scores, step),
                                                            kept_curve(held_out_cc, step),
                                                            kept_curve([*human_good, *human_bad], step))],
    }


def format_calibration(report: Mapping[str, Any], print_step: float = 0.1) -> str:
    lines = [f"== quality filter calibration: keep rand <= t; t chosen on {report['cc_documents']} English CC "
             f"documents (out-of-fold scores, outside the held-out split) to keep >= {report['target_keep_share']:.0%}, "
             f"reported on the {report['held_out_cc_documents']} English CC documents of the held-out split and "
             f"{sum(report['human_documents'].values())} DCLM human-labelled CC documents (shipped model)",
             f"{'t':>6} {'CC kept':>8} {'held-out CC':>12} {'DCLM kept':>10}"]
    for point in report["curve"]:
        if abs(point["max_rand_score"] / print_step - round(point["max_rand_score"] / print_step)) < 1e-6:
            lines.append(f"{point['max_rand_score']:6.2f} {point['cc_kept_share']:8.1%} "
                         f"{point['held_out_cc_kept_share']:12.1%} {point['human_kept_share']:10.1%}")
    for name, rule in report["rules"].items():
        human = rule["human"]
        lines.append(f"{name} rule rand <= {rule['max_rand_score']}: keeps {rule['cc_kept_share']:.1%} of the CC documents "
                     f"(choice set), {rule['held_out_cc_kept_share']:.1%} of the held-out CC documents, "
                     f"{human['kept_share']:.1%} of the DCLM documents (report sets; "
                     f"{human['precision_good']:.1%} of the kept are human-good, {human['recall_good']:.1%} of the good are kept)")
    return "\n".join(lines)
