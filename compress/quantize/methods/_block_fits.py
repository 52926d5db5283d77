"""How a block of weights is put on a 4-bit grid: the fits the int4 block writers use.

A fit takes ``blocks`` ``[..., block]`` (float32), and optionally ``activation``, the mean
square of each weight's input over calibration data (broadcastable to ``blocks``: llama.cpp's
importance matrix), and returns ``(levels, step, low)``:
``levels`` in 0..15 (uint8), the step per block ``[..., 1]``, and the block's lowest level
``low`` ``[..., 1]`` for an asymmetric grid (``weight ~= step * levels + low``), or None for a
symmetric one (``weight ~= step * (levels - 8)``).

- :func:`minmax_asymmetric`: 16 levels from the block's minimum to its maximum (llama.cpp's
  Q4_1); a block that came from such a grid is reproduced exactly.
- :func:`searched_asymmetric`: llama.cpp's k-quant search (``make_qkx2_quants``): a range
  of candidate steps around the min/max one, the levels rounded for each, then the step and
  minimum re-fitted by weighted least squares, the lowest weighted error kept (the min/max
  fit is a candidate, so it is never worse). Weights count by ``rms(block) + |w|``: large
  weights, which carry more of the output, are fitted more closely; given ``activation``,
  by ``activation * sqrt(2 mean(w^2) + w^2)`` (llama.cpp's weighting with an importance
  matrix): weights that meet large inputs count more.
- :func:`searched_symmetric`: the same search for a grid symmetric about 0 (levels -8..7,
  no minimum to store: ONNX Runtime's fastest int4 kernel), the step re-fitted by weighted
  least squares; the absmax fit (llama.cpp's Q4_0) is a candidate.
"""

from __future__ import annotations

import numpy as np

LEVELS = 15   # the highest 4-bit level


def _importance(blocks: np.ndarray, activation: np.ndarray | None = None) -> np.ndarray:
    """k-quant's weighting of each weight in its block: rms(block) + |w|, or with the
    inputs' mean squares, activation * sqrt(2 mean(w^2) + w^2)."""
    mean_square = np.mean(blocks * blocks, axis=-1, keepdims=True)
    if activation is None:
        return np.sqrt(mean_square) + np.abs(blocks)
    return activation * np.sqrt(2 * mean_square + blocks * blocks)


def _weighted_error(blocks, importance, values) -> np.ndarray:
    return np.sum(importance * (values - blocks) ** 2, axis=-1, keepdims=True)


def minmax_asymmetric(blocks: np.ndarray, activation: np.ndarray | None = None):
    """16 levels from each block's minimum to its maximum (a constant block: every level 0,
    its value in ``low``); ``activation`` plays no part."""
    low = blocks.min(axis=-1, keepdims=True)
    step = (blocks.max(axis=-1, keepdims=True) - low) / LEVELS
    step[step == 0] = 1.0
    levels = np.clip(np.round((blocks - low) / step), 0, LEVELS)
    return levels.astype(np.uint8), step.astype(np.float32), low.astype(np.float32)


def searched_asymmetric(blocks: np.ndarray, activation: np.ndarray | None = None,
                        candidates: int = 20, start: float = -1.0, stride: float = 0.1):
    """k-quant's search: inverse steps ``(15 + start + stride * i) / range`` for ``i`` in
    0..candidates, each re-fitted by weighted least squares; the best of them and min/max."""
    blocks = blocks.astype(np.float32)
    weight = _importance(blocks, activation)
    levels, step, low = minmax_asymmetric(blocks)
    best = _weighted_error(blocks, weight, step * levels + low)
    lowest = blocks.min(axis=-1, keepdims=True)
    span = blocks.max(axis=-1, keepdims=True) - lowest
    span[span == 0] = 1.0
    sum_w = weight.sum(axis=-1, keepdims=True)
    sum_wx = (weight * blocks).sum(axis=-1, keepdims=True)
    for i in range(candidates + 1):
        trial = np.clip(np.round((LEVELS + start + stride * i) / span * (blocks - lowest)),
                        0, LEVELS)
        sum_wl = (weight * trial).sum(axis=-1, keepdims=True)
        sum_wll = (weight * trial * trial).sum(axis=-1, keepdims=True)
        sum_wxl = (weight * blocks * trial).sum(axis=-1, keepdims=True)
        det = sum_w * sum_wll - sum_wl * sum_wl
        safe = np.where(det > 0, det, 1.0)
        trial_step = (sum_w * sum_wxl - sum_wx * sum_wl) / safe
        trial_low = (sum_wll * sum_wx - sum_wl * sum_wxl) / safe
        error = _weighted_error(blocks, weight, trial_step * trial + trial_low)
        better = (det > 0) & (trial_step > 0) & (error < best)
        levels = np.where(better, trial, levels)
        step = np.where(better, trial_step, step)
        low = np.where(better, trial_low, low)
        best = np.where(better, error, best)
    return levels.astype(np.uint8), step.astype(np.float32), low.astype(np.float32)


def searched_symmetric(blocks: np.ndarray, activation: np.ndarray | None = None,
                       candidates: int = 9, stride: float = 0.1):
    """Levels -8..7 (stored + 8): inverse steps ``-(8 + stride * i) / m`` for ``i`` in
    -candidates..candidates, ``m`` the block's value of largest magnitude (``i = 0`` is the
    absmax fit), each step re-fitted by weighted least squares; the best kept."""
    blocks = blocks.astype(np.float32)
    weight = _importance(blocks, activation)
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(axis=-1)[..., None], axis=-1)
    extreme[extreme == 0] = 1.0
    best_score = np.full(extreme.shape, -np.inf, np.float32)
    levels = np.zeros(blocks.shape, np.float32)
    step = np.ones(extreme.shape, np.float32)
    for i in range(-candidates, candidates + 1):
        trial = np.clip(np.round(-(8 + stride * i) / extreme * blocks), -8, 7)
        sum_wxl = (weight * blocks * trial).sum(axis=-1, keepdims=True)
        sum_wll = (weight * trial * trial).sum(axis=-1, keepdims=True)
        safe = np.where(sum_wll > 0, sum_wll, 1.0)
        # the weighted error is sum(w x^2) - sum_wxl^2 / sum_wll: the largest score wins
        score = np.where(sum_wll > 0, sum_wxl * sum_wxl / safe, -np.inf)
        better = score > best_score
        levels = np.where(better, trial, levels)
        step = np.where(better, sum_wxl / safe, step)
        best_score = np.where(better, score, best_score)
    step[step == 0] = 1.0   # an all-zero block: every level 8, any step
    return (levels + 8).astype(np.uint8), step.astype(np.float32), None


__all__ = ["minmax_asymmetric", "searched_asymmetric", "searched_symmetric"]
