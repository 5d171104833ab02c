"""Order-free sums of nested tallies (dicts of numbers, lists and dicts), for every job's run totals.

Reals that are not integers (Python and numpy floats) are added as exact fractions, so the total does
not depend on the order the runner adds the pieces in; :func:`finish_sums` rounds them back to floats.
Numpy integers become ints, so the total is JSON-ready.
"""
from __future__ import annotations

import numbers
from fractions import Fraction
from typing import Any, Mapping


def _exact(value: Any) -> Any:
    """A real that is not an integer (float, np.float32, np.float64, ...) as the fraction it holds
    exactly, a numpy integer as an int (JSON-ready); anything else as it is."""
    if isinstance(value, numbers.Integral) and not isinstance(value, int):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Rational):
        return Fraction(float(value))  # float() of a numpy float is exact; Fraction() refuses np.float32
    return value


def add_sums(into: dict, other: Mapping) -> dict:
    """Recursive sum into ``into`` of numbers, lists (element-wise) and dicts; floats become exact
    fractions (:func:`finish_sums` turns them back), so any summation order gives the same bytes."""
    for key, value in other.items():
        if isinstance(value, Mapping):
            add_sums(into.setdefault(key, {}), value)
        elif isinstance(value, list):
            current = into.get(key)
            into[key] = [_exact(v) for v in value] if current is None else [a + _exact(b) for a, b in zip(current, value)]
        else:
            into[key] = into.get(key, 0) + _exact(value)
    return into


def finish_sums(total: Any) -> Any:
    """A summed tally with its exact fractions rounded back to floats (JSON-ready)."""
    if isinstance(total, Mapping):
        return {key: finish_sums(value) for key, value in total.items()}
    if isinstance(total, list):
        return [finish_sums(value) for value in total]
    return float(total) if isinstance(total, Fraction) else total
