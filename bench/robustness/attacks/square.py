"""A score-based black-box attack on the deployed model: Square Attack through ONNX Runtime.

Square Attack (Andriushchenko et al., ECCV 2020, L-infinity version) needs nothing but the
model's output scores, so it attacks the artifact exactly as shipped, an int8 ONNX file
included, where gradients do not exist. Each sample starts at a random vertex of the
eps-ball (+-eps at every value); each iteration redraws one random window of the
perturbation (a square for images, a segment for signals; one place for all samples, as
in the reference code) to a fresh +-eps per sample and channel, and keeps the change for a
sample only if it lowers its margin ``score[true] - max score[other]``. A sample
is done once the margin is negative (misclassified) or its queries are spent. The window
shrinks on the paper's schedule as queries are used.

Queries are counted per sample, every model call on it included: the clean check (1), the
random start (1), then one per iteration while the sample is still correctly classified.
A sample the model already gets wrong costs 1 query.
"""

from __future__ import annotations

import numpy as np

from edgepack.bench.robustness.attacks import ATTACKS, AttackSpec

# The paper halves the window's share p at these fractions of a 10,000-query budget.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def window_share(p_init: float, iteration: int, budget: int) -> float:
    """The share of input values one window covers after ``iteration`` of ``budget``."""
    scaled = iteration * 10_000 / max(budget, 1)
    return p_init / 2 ** sum(scaled > h for h in _HALVINGS)


def margins(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``score[true] - max score[other]`` per row; negative means misclassified."""
    rows = np.arange(len(labels))
    true = scores[rows, labels]
    other = scores.copy()
    other[rows, labels] = -np.inf
    return true - other.max(axis=1)


def _window(sample_shape: tuple[int, ...], share: float, rng) -> tuple[slice, ...]:
    """A random window over a sample's spatial axes (all but the channel axis, if any)."""
    spatial = sample_shape[1:] if len(sample_shape) > 1 else sample_shape
    total = int(np.prod(spatial))
    side = max(1, int(round((share * total) ** (1 / len(spatial)))))
    slices = []
    for size in spatial:
        width = min(side, size)
        begin = int(rng.integers(0, size - width + 1))
        slices.append(slice(begin, begin + width))
    return (slice(None), *slices) if len(sample_shape) > 1 else tuple(slices)


def _fresh_signs(current: np.ndarray, eps: float, rng) -> np.ndarray:
    """A new +-eps per sample and channel for a window whose perturbation is ``current``
    (rows, channels, *window) or (rows, *window); a draw that would leave a sample's window
    as it is gets one channel flipped, so no query is wasted (the reference code redraws)."""
    channels = current.shape[1] if current.ndim > 2 else 1
    shape = (len(current), channels) + (1,) * (current.ndim - 2)
    signs = rng.choice(np.array([-eps, eps], np.float32), size=shape)
    if current.ndim == 2:
        signs = signs.reshape(len(current), 1)
    same = np.isclose(current, signs, atol=1e-6 * max(eps, 1e-12))
    unchanged = same.reshape(len(current), -1).all(axis=1)
    for row in np.flatnonzero(unchanged):
        channel = int(rng.integers(0, channels)) if current.ndim > 2 else 0
        signs[row, channel] = -signs[row, channel]
    return np.broadcast_to(signs, current.shape)


def square_attack(predict, inputs: np.ndarray, labels: np.ndarray, eps: float,
                  query_budget: int = 200, p_init: float = 0.1, seed: int = 0) -> dict:
    """Attack ``predict`` (numpy batch -> scores) on ``inputs`` (N, C, ...) within ``eps``.

    Returns ``{"adversarial": inputs, "correct": bool per sample after the attack,
    "queries": model calls per sample}``. Calls on samples that are already misclassified
    are not made, so the budget is a hard cap per sample.
    """
    if query_budget < 2:
        raise ValueError(f"square attack: query_budget must be >= 2 (a clean check and a "
                         f"random start), got {query_budget}")
    rng = np.random.default_rng(seed)
    x = inputs.astype(np.float32, copy=True)
    queries = np.ones(len(x), dtype=np.int64)
    best = margins(predict(x), labels)
    active = np.flatnonzero(best > 0)
    if len(active):
        start = x[active] + eps * rng.choice(np.array([-1.0, 1.0], np.float32),
                                             size=x[active].shape)
        queries[active] += 1
        start_margin = margins(predict(start), labels[active])
        x[active] = start   # the start is a vertex of the ball, kept whatever its margin
        best[active] = start_margin
    clean = inputs.astype(np.float32)
    for iteration in range(query_budget - 2):
        active = np.flatnonzero(best > 0)
        if not len(active):
            break
        window = (slice(None),) + _window(x.shape[1:], window_share(p_init, iteration,
                                                                    query_budget), rng)
        candidates = x[active].copy()
        candidates[window] = clean[active][window] + _fresh_signs(
            candidates[window] - clean[active][window], eps, rng)
        queries[active] += 1
        new = margins(predict(candidates), labels[active])
        better = new < best[active]
        x[active[better]] = candidates[better]
        best[active[better]] = new[better]
    return {"adversarial": x, "correct": best > 0, "queries": queries}


def run(inputs, eps: float, budget: float) -> dict:
    """Accuracy under Square Attack at ``budget``, and the model calls it spent per sample."""
    from edgepack.bench.robustness.attacks import query_summary

    config = inputs.config
    result = square_attack(inputs.predict, inputs.x, inputs.y, budget, config.query_budget,
                           seed=config.seed)
    return {"accuracy": float(result["correct"].mean()),
            "queries": query_summary(result["queries"], inputs.clean_correct,
                                     config.query_budget)}


ATTACKS.register(AttackSpec("square", "Square", run=run, order=40, counts_queries=True))
