"""FGSM and PGD from IBM's adversarial-robustness-toolbox (ART), set up like ours.

An independent implementation to check ``edgepack.bench.robustness.attacks`` against, used only by
benchmarks/robustness_mnist1d.py and tests/bench/test_robustness_art.py (ART is not a
dependency of edgepack). Install it beside the repository::

    pip install --no-deps --target .art adversarial-robustness-toolbox==1.20.1 six

Like for like: L-infinity, the same eps (absolute), the same step ``2.5 * eps / steps``, the
same number of steps, one random start uniform in the ball, no clipping to data bounds
(edgepack's inputs are standardised signals with no natural bounds, and ART clips only when
given ``clip_values``), cross-entropy on the true labels, the model in eval mode, the same
batches. FGSM has no randomness, so the two must agree exactly. PGD's random start is the
only difference left: :func:`same_start` makes ART draw the very start ours draws, so a
difference there is a difference in the algorithm; with independent starts the two differ
by sampling noise only (compare means over several starts).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from pathlib import Path

import numpy as np
import torch

ART_PGD_MODULE = ("art.attacks.evasion.projected_gradient_descent."
                  "projected_gradient_descent_pytorch")
BATCH = 256          # edgepack.bench.robustness.attacks.craft's batch: the same rows share a start seed


def import_art(folder: str | Path | None = None):
    """The ``art`` package, from ``folder`` (e.g. ``.art``) when it is not installed."""
    try:
        return importlib.import_module("art")
    except ImportError:
        if folder is None or not Path(folder).is_dir():
            raise
        sys.path.insert(0, str(Path(folder).resolve()))
        return importlib.import_module("art")


def classifier(model, sample_shape: tuple[int, ...], classes: int):
    """``model`` as an ART classifier: cross-entropy, no clip values, eval mode."""
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=model.eval(), loss=torch.nn.CrossEntropyLoss(),
                             input_shape=tuple(sample_shape), nb_classes=classes)


def art_fgsm(estimator, x: np.ndarray, y: np.ndarray, eps: float) -> np.ndarray:
    from art.attacks.evasion import FastGradientMethod

    return FastGradientMethod(estimator, norm=np.inf, eps=eps, batch_size=BATCH).generate(x=x, y=y)


def art_pgd(estimator, x: np.ndarray, y: np.ndarray, eps: float, steps: int) -> np.ndarray:
    """ART's PGD with our step size, steps and one random start (drawn from numpy's global
    generator unless inside :func:`same_start`)."""
    from art.attacks.evasion import ProjectedGradientDescent

    attack = ProjectedGradientDescent(estimator, norm=np.inf, eps=eps, eps_step=2.5 * eps / steps,
                                      max_iter=steps, num_random_init=1, batch_size=BATCH,
                                      verbose=False)
    return attack.generate(x=x, y=y)


@contextlib.contextmanager
def same_start(seed: int):
    """Inside, ART's PGD starts where ``edgepack.bench.robustness.attacks.craft(seed=seed)`` starts:
    uniform in [-eps, eps] from a torch generator seeded ``seed + first row of the batch``."""
    module = importlib.import_module(ART_PGD_MODULE)
    original, first_row = module.random_sphere, [0]

    def start(points: int, dims: int, radius, norm) -> np.ndarray:
        generator = torch.Generator().manual_seed(seed + first_row[0])
        first_row[0] += points
        return ((torch.rand((points, dims), generator=generator) * 2 - 1) * radius).numpy()

    module.random_sphere = start
    try:
        yield
    finally:
        module.random_sphere = original
