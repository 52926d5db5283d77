"""How well a membership score separates members from non-members, and how sure that is.

- :func:`roc_auc`: the probability that a random member scores above a random non-member
  (ties count half), from mid-ranks: the Mann-Whitney statistic;
- :func:`tpr_at_fpr`: the share of members caught while at most ``fpr`` of the non-members
  are wrongly flagged (Carlini et al. 2022 argue this low-FPR figure, not the AUC, is what
  says whether an attack endangers anyone);
- :func:`balanced_accuracy`: the mean of the TPR and TNR at one threshold, the threshold
  fitted on the other half of the data (two folds, swapped and averaged), so the figure is
  not the best threshold chosen on the very samples it is scored on;
- :func:`summarize`: all three with 95% bootstrap percentile intervals (members and
  non-members resampled separately, so each resample keeps the sizes).
"""

from __future__ import annotations

import numpy as np


def roc_auc(members: np.ndarray, non_members: np.ndarray) -> float:
    scores = np.concatenate([members, non_members])
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_ranks = (ends - (counts - 1) / 2.0)[inverse]       # 1-based mid-ranks of each score
    n_m, n_n = len(members), len(non_members)
    rank_sum = mid_ranks[:n_m].sum()
    return float((rank_sum - n_m * (n_m + 1) / 2.0) / (n_m * n_n))


def roc_curve(members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every threshold "score >= t", from the strictest to the loosest."""
    thresholds = np.unique(np.concatenate([members, non_members]))[::-1]
    m, n = np.sort(members), np.sort(non_members)
    tpr = (len(m) - np.searchsorted(m, thresholds, side="left")) / len(m)
    fpr = (len(n) - np.searchsorted(n, thresholds, side="left")) / len(n)
    return np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr])


def tpr_at_fpr(members: np.ndarray, non_members: np.ndarray, fpr: float = 0.01) -> float:
    false, true = roc_curve(members, non_members)
    return float(true[false <= fpr + 1e-12].max())


def _best_threshold(members: np.ndarray, non_members: np.ndarray) -> float:
    """The threshold with the highest balanced accuracy on these samples, placed midway
    between the score it admits last and the next lower one (as a decision stump does)."""
    false, true = roc_curve(members, non_members)
    scores = np.unique(np.concatenate([members, non_members]))[::-1]
    best = int(np.argmax(true - false))   # 0: admit nothing; k: admit scores >= scores[k-1]
    if best == 0:
        return float(np.inf)
    if best == len(scores):
        return float(scores[-1])
    return float((scores[best - 1] + scores[best]) / 2.0)


def _balanced(members, non_members, threshold: float) -> float:
    return 0.5 * (float(np.mean(members >= threshold)) + float(np.mean(non_members < threshold)))


def balanced_accuracy(members: np.ndarray, non_members: np.ndarray,
                      rng: np.random.Generator) -> float:
    """Two-fold: a threshold fitted on one random half, scored on the other, and back."""
    m, n = rng.permutation(members), rng.permutation(non_members)
    halves_m, halves_n = np.array_split(m, 2), np.array_split(n, 2)
    found = []
    for fit, score in ((0, 1), (1, 0)):
        threshold = _best_threshold(halves_m[fit], halves_n[fit])
        found.append(_balanced(halves_m[score], halves_n[score], threshold))
    return float(np.mean(found))


def figures(members, non_members, rng) -> dict:
    return {"auc": roc_auc(members, non_members),
            "tpr_at_1pct_fpr": tpr_at_fpr(members, non_members, 0.01),
            "balanced_accuracy": balanced_accuracy(members, non_members, rng)}


def summarize(members: np.ndarray, non_members: np.ndarray, resamples: int = 200,
              seed: int = 0) -> dict:
    """Each figure, and its 95% bootstrap interval as ``{name}_interval: [low, high]``."""
    members = np.asarray(members, dtype=np.float64)
    non_members = np.asarray(non_members, dtype=np.float64)
    if not (np.isfinite(members).all() and np.isfinite(non_members).all()):
        raise ValueError("membership scores hold NaN or Inf: the model's outputs are not "
                         "finite")
    rng = np.random.default_rng(seed)
    found = figures(members, non_members, rng)
    draws = {name: [] for name in found}
    for _ in range(resamples):
        m = members[rng.integers(0, len(members), len(members))]
        n = non_members[rng.integers(0, len(non_members), len(non_members))]
        for name, value in figures(m, n, rng).items():
            draws[name].append(value)
    out = {}
    for name, value in found.items():
        low, high = np.percentile(draws[name], [2.5, 97.5])
        out[name] = round(value, 6)
        out[f"{name}_interval"] = [round(float(low), 6), round(float(high), 6)]
    return out
