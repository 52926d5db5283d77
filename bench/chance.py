"""Chance level: what a model that learned nothing scores, and whether a figure is near it.

A comparison against a model near chance is no comparison: a student "closing 99% of the gap"
to an alone-student that diverged, or stages "losing no accuracy" against a teacher that
never learned, say nothing. Reports check each side with :func:`near_chance` first.
"""

from __future__ import annotations

import math

import numpy as np


def chance_accuracy(labels) -> float:
    """The accuracy of always answering the most frequent class (a collapsed model's)."""
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if labels.size == 0:
        return 0.0
    return float(np.bincount(labels - labels.min()).max()) / labels.size


def near_chance(accuracy: float, chance: float, samples: int) -> bool:
    """Whether an accuracy is no better than chance, give or take 5 binomial standard errors
    (at least 2 points): such a model did not learn."""
    se = math.sqrt(max(chance * (1 - chance), 0.0) / max(1, samples))
    return accuracy <= chance + max(0.02, 5 * se)
