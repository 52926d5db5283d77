"""Attribution drift: does a compressed model still look where its teacher looked?

Two saliency maps per input, both ranking input positions by how much they matter for the
true class:

- *gradient x input* (Shrikumar et al. 2016; Ancona et al. 2018) for torch models:
  ``|x * d score[true] / d x|``, summed over channels;
- *occlusion* (Zeiler & Fergus 2014) for models that exist only as ONNX (an int8 file has
  no gradient): the drop in the true-class score when one window of the input is set to the
  data's mean, window by window, all run through ONNX Runtime.

Drift is the Spearman rank correlation between a stage's maps and the teacher's (the same
method on both sides), per input, averaged: 1 means the same ranking of positions, 0 none.
"""

from __future__ import annotations

import numpy as np


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks along the last axis, ties given their average rank (as Spearman needs)."""
    order = np.argsort(values, axis=-1, kind="stable")
    sorted_values = np.take_along_axis(values, order, axis=-1)
    out = np.empty(values.shape, dtype=np.float64)
    for row in range(values.shape[0]):
        v = sorted_values[row]
        starts = np.flatnonzero(np.r_[True, v[1:] != v[:-1]])
        ends = np.r_[starts[1:], len(v)]
        average = (starts + ends + 1) / 2.0      # mean of the 1-based ranks a tie spans
        out[row, order[row]] = np.repeat(average, ends - starts)
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between matching rows of ``a`` and ``b`` (N, D) -> (N,).

    A constant row has no ranking; its rho is 0 (nothing in common can be claimed).
    """
    ra = ranks(np.asarray(a, dtype=np.float64).reshape(len(a), -1))
    rb = ranks(np.asarray(b, dtype=np.float64).reshape(len(b), -1))
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    norm = np.sqrt((ra ** 2).sum(axis=1) * (rb ** 2).sum(axis=1))
    return np.where(norm > 0, (ra * rb).sum(axis=1) / np.where(norm > 0, norm, 1.0), 0.0)


def gradient_x_input(model, inputs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``|x * d logit[true] / d x|`` summed over the channel axis: (N, *spatial)."""
    import torch

    was_training = model.training
    model.eval()
    try:
        x = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32)).requires_grad_(True)
        with torch.enable_grad():
            logits = model(x)
            chosen = logits.gather(1, torch.from_numpy(labels).long().view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(chosen, x)
    finally:
        model.train(was_training)
    saliency = (grad * x).detach().abs().numpy()
    return saliency.sum(axis=1) if saliency.ndim > 2 else saliency


def occlusion_windows(sample_shape: tuple[int, ...], target: int = 20) -> list[tuple]:
    """Non-overlapping windows tiling the spatial axes, about ``target`` per axis."""
    spatial = sample_shape[1:] if len(sample_shape) > 1 else sample_shape
    grids = []
    for size in spatial:
        width = max(1, round(size / target))
        grids.append([slice(b, min(b + width, size)) for b in range(0, size, width)])
    windows = [()]
    for grid in grids:
        windows = [w + (s,) for w in windows for s in grid]
    return [((slice(None),) + w) if len(sample_shape) > 1 else w for w in windows]


def occlusion(predict, inputs: np.ndarray, labels: np.ndarray, baseline: float,
              target: int = 20) -> np.ndarray:
    """``|change|`` of the true-class score when each window is set to ``baseline``: (N, windows).

    ``predict`` maps a numpy batch to scores (see :func:`edgepack.bench.robustness.predictions.ort_predict`).
    """
    rows = np.arange(len(inputs))
    clean = predict(inputs)[rows, labels]
    windows = occlusion_windows(inputs.shape[1:], target)
    drops = np.empty((len(inputs), len(windows)), dtype=np.float64)
    for column, window in enumerate(windows):
        covered = inputs.copy()
        covered[(slice(None),) + window] = baseline
        drops[:, column] = np.abs(clean - predict(covered)[rows, labels])
    return drops
