"""Our FGSM and PGD against an independent implementation (IBM's ART), set up like for like.

Skipped with the reason when ART is neither installed nor in the repository's ``.art``
folder (``pip install --no-deps --target .art adversarial-robustness-toolbox==1.20.1 six``).
"""

from pathlib import Path

import numpy as np
import pytest

from edgepack.bench.robustness.attacks import craft
from tests.bench.robust_models import eval_arrays, trained_tiny

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def art():
    from benchmarks import art_reference

    try:
        art_reference.import_art(REPO / ".art")
    except ImportError as error:
        pytest.skip(f"adversarial-robustness-toolbox is not importable ({error}); install it "
                    "with: pip install --no-deps --target .art "
                    "adversarial-robustness-toolbox==1.20.1 six")
    return art_reference


def accuracy(model, x, y) -> float:
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


@pytest.mark.parametrize("eps", [0.1, 0.3])
def test_fgsm_and_pgd_from_the_same_start_match_art(art, eps):
    model = trained_tiny()
    x, y = eval_arrays(300)          # more than one batch: the start seeds follow the rows
    estimator = art.classifier(model, x.shape[1:], 10)
    ours, theirs = craft("fgsm", model, x, y, eps), art.art_fgsm(estimator, x, y, eps)
    np.testing.assert_allclose(ours, theirs, atol=1e-6)
    ours = craft("pgd", model, x, y, eps, steps=5, seed=3)
    with art.same_start(seed=3):
        theirs = art.art_pgd(estimator, x, y, eps, steps=5)
    assert np.abs(ours - x).max() <= eps + 1e-6 and np.abs(theirs - x).max() <= eps + 1e-6
    # the same start, step, steps and projection: the same points but for float rounding
    # that can flip the sign of a near-zero gradient on a rare value
    assert np.mean(np.abs(ours - theirs) > 1e-5) < 0.01
    assert abs(accuracy(model, ours, y) - accuracy(model, theirs, y)) <= 0.01


def test_same_start_is_what_makes_pgd_agree(art):
    """Without it the two runs start at different random points: the check above tests the
    algorithm, not a lucky draw."""
    model = trained_tiny()
    x, y = eval_arrays(64)
    estimator = art.classifier(model, x.shape[1:], 10)
    np.random.seed(0)
    theirs = art.art_pgd(estimator, x, y, 0.3, steps=1)
    ours = craft("pgd", model, x, y, 0.3, steps=1, seed=3)
    # values pushed to the same face of the ball agree anyway; the rest differ
    assert np.mean(np.abs(ours - theirs) > 1e-5) > 0.1
