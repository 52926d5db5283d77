"""Attribution drift: rank correlation of saliency maps, gradient x input and occlusion."""

import copy

import numpy as np
import pytest
import torch

from edgepack.bench.robustness import robustness_session
from edgepack.bench.robustness.attribution import (gradient_x_input, occlusion, occlusion_windows,
                                                   ranks, spearman)
from edgepack.bench.robustness.predictions import ort_predict
from tests.bench.robust_models import eval_arrays, export_tiny, trained_tiny


def _perturbed(model, scale: float, seed: int = 0):
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(scale * p.std() * torch.randn(p.shape, generator=generator))
    return other


def test_spearman_matches_scipy_with_ties():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(6, 30)).astype(float)   # many ties
    b = rng.standard_normal((6, 30))
    ours = spearman(a, b)
    for row in range(6):
        assert ours[row] == pytest.approx(stats.spearmanr(a[row], b[row]).statistic, abs=1e-12)
    assert np.array_equal(ranks(np.array([[3.0, 1.0, 3.0]])), np.array([[2.5, 1.0, 2.5]]))
    assert spearman(np.ones((1, 5)), b[:1, :5])[0] == 0.0   # a flat map ranks nothing


def test_gradient_x_input_of_a_model_with_itself_is_1_and_drifts_when_perturbed():
    model = trained_tiny()
    x, y = eval_arrays(64)
    own = gradient_x_input(model, x, y)
    assert own.shape == (64, 40)
    assert spearman(own, gradient_x_input(model, x, y)).mean() == pytest.approx(1.0)
    slightly = spearman(own, gradient_x_input(_perturbed(model, 0.05), x, y)).mean()
    heavily = spearman(own, gradient_x_input(_perturbed(model, 1.0), x, y)).mean()
    assert heavily < slightly < 1.0
    assert heavily < 0.7


def test_occlusion_through_onnx_runtime(tmp_path):
    model = trained_tiny()
    x, y = eval_arrays(32)
    predict = ort_predict(robustness_session(export_tiny(model, tmp_path / "m.onnx")))
    maps = occlusion(predict, x, y, baseline=float(x.mean()))
    assert maps.shape == (32, len(occlusion_windows(x.shape[1:]))) == (32, 20)
    assert spearman(maps, occlusion(predict, x, y, float(x.mean()))).mean() == pytest.approx(1.0)
    other = ort_predict(robustness_session(export_tiny(_perturbed(model, 1.0),
                                                       tmp_path / "p.onnx")))
    assert spearman(maps, occlusion(other, x, y, float(x.mean()))).mean() < 0.7
    # occlusion and gradient x input broadly agree on where the trained model looks
    torch_maps = gradient_x_input(model, x, y).reshape(32, 20, 2).sum(-1)
    assert spearman(maps, torch_maps).mean() > 0.2


def test_windows_tile_images_too():
    windows = occlusion_windows((3, 32, 32), target=8)
    assert len(windows) == 64
    covered = np.zeros((3, 32, 32))
    for w in windows:
        covered[w] += 1
    assert (covered == 1).all()
