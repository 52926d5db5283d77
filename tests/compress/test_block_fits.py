"""The 4-bit block fits (k-quant's search beside min/max and absmax) and the kquant algorithm:
the search never does worse than its starting fit, does better off a grid, keeps a grid it is
given, and the ONNX graph computes the fitted weight."""

import numpy as np
import onnx
import pytest
from edgepack.compress.quantize.methods._block_fits import (
    minmax_asymmetric,
    searched_asymmetric,
    searched_symmetric,
)
from edgepack.compress.quantize.methods._block_offset import (
    dequantize,
    offset_blocks,
    quantize_offset_int4,
)

from tests.compress.one_matmul import one_matmul


def _blocks(seed=0, count=400, size=32):
    """Weight-like blocks: heavy-tailed (Student t), as trained projections are."""
    return np.random.default_rng(seed).standard_t(4, size=(count, size)).astype(np.float32) * 0.02


def _values(fit, blocks):
    levels, step, low = fit(blocks)
    return step * levels + low if low is not None else step * (levels.astype(np.float32) - 8)


def _weighted_error(blocks, values):
    weight = np.sqrt(np.mean(blocks ** 2, axis=-1, keepdims=True)) + np.abs(blocks)
    return np.sum(weight * (values - blocks) ** 2, axis=-1)


def _absmax_symmetric(blocks):
    """llama.cpp's Q4_0: the value of largest magnitude on level -8."""
    extreme = np.take_along_axis(blocks, np.abs(blocks).argmax(-1)[:, None], -1)
    step = extreme / -8
    levels = np.clip(np.round(blocks / step), -8, 7) + 8
    return levels.astype(np.uint8), step, None


def test_the_asymmetric_search_never_loses_to_min_max_and_wins_off_a_grid():
    blocks = _blocks()
    searched = _weighted_error(blocks, _values(searched_asymmetric, blocks))
    minmax = _weighted_error(blocks, _values(minmax_asymmetric, blocks))
    assert (searched <= minmax * (1 + 1e-5) + 1e-12).all()
    assert searched.sum() < 0.9 * minmax.sum()          # seeded: 0.84x


def test_the_symmetric_search_never_loses_to_absmax_and_wins_off_a_grid():
    blocks = _blocks(seed=1)
    searched = _weighted_error(blocks, _values(searched_symmetric, blocks))
    absmax = _weighted_error(blocks, _values(_absmax_symmetric, blocks))
    assert (searched <= absmax * (1 + 1e-5) + 1e-12).all()
    assert searched.sum() < 0.98 * absmax.sum()         # seeded: 0.95x


def test_a_q4_1_grid_stays_exact_under_the_search():
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 16, size=(50, 32))
    levels[:, 0], levels[:, 1] = 0, 15
    step = rng.uniform(0.01, 0.05, size=(50, 1))
    blocks = (rng.normal(0, 0.1, size=(50, 1)) + step * levels).astype(np.float32)
    assert np.abs(_values(searched_asymmetric, blocks) - blocks).max() < 1e-6


@pytest.mark.parametrize("fit", [searched_asymmetric, searched_symmetric])
def test_constant_and_zero_blocks_stay_finite(fit):
    blocks = np.stack([np.zeros(32, np.float32), np.full(32, 0.3, np.float32)])
    values = _values(fit, blocks)
    assert np.isfinite(values).all()
    assert np.abs(values[0]).max() == 0
    if fit is searched_asymmetric:      # the minimum carries a constant block exactly
        assert np.abs(values[1] - 0.3).max() < 1e-6


@pytest.mark.parametrize("fit, ops", [
    (searched_asymmetric, ["Reshape", "ReduceSum", "MatMulNBits", "MatMul", "Add"]),
    (searched_symmetric, ["MatMulNBits"])])
def test_the_graph_computes_the_fitted_weight(fit, ops):
    import onnxruntime as ort

    weight = np.random.default_rng(3).standard_t(4, size=(96, 16)).astype(np.float32) * 0.02
    model = one_matmul(96, 16, weight)
    quantize_offset_int4(model, 32, 0, fit=fit)
    assert [n.op_type for n in model.graph.node] == ops   # symmetric: no correction at all
    onnx.checker.check_model(model)
    fitted = dequantize(*offset_blocks(weight, 32, fit))
    x = np.random.default_rng(4).normal(size=(1, 3, 96)).astype(np.float32)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    assert np.abs(session.run(None, {"x": x})[0] - x @ fitted).max() < 1e-5


@pytest.mark.parametrize("symmetric", [True, False])
def test_kquant_is_an_int4_algorithm_with_both_grids(symmetric):
    from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS
    from edgepack.compress.quantize.methods import METHODS

    settings = METHODS.get("int4").settings(algorithm="kquant", symmetric=symmetric,
                                            block_size=64)
    assert settings.algorithm == "kquant" and settings.symmetric is symmetric
    assert "kquant" in INT4_ALGORITHMS.names()


def test_an_importance_matrix_lowers_the_output_error_on_the_inputs_it_was_measured_on():
    """Inputs of very different sizes (a few channels 30x the rest, as a transformer's
    outlier features): weighting each weight by its input's mean square fits the weights
    that meet the large inputs closer, so the MatMul's output error on such inputs drops."""
    from edgepack.compress.quantize.int4_algorithms.imatrix import input_mean_squares

    rng = np.random.default_rng(7)
    k, n = 128, 64
    weight = rng.standard_t(4, size=(k, n)).astype(np.float32) * 0.02
    scale = np.ones(k, np.float32)
    scale[rng.choice(k, 8, replace=False)] = 30.0
    x = (rng.normal(size=(4, 16, k)) * scale).astype(np.float32)
    model = one_matmul(k, n, weight)
    squares = input_mean_squares(model, [{"x": x[i:i + 1, :3]} for i in range(4)])
    assert set(squares) == {"x"}
    expected = np.mean((x[:, :3].reshape(-1, k)) ** 2, axis=0)
    assert np.allclose(squares["x"], expected, rtol=1e-5)
    for fit in (searched_asymmetric, searched_symmetric):
        plain = dequantize(*offset_blocks(weight, 32, fit))
        weighted = dequantize(*offset_blocks(weight, 32, fit, squares["x"]))
        error = [float(np.mean((x @ (w - weight)) ** 2)) for w in (plain, weighted)]
        assert error[1] < 0.7 * error[0], (fit.__name__, error)


def test_imatrix_needs_calibration_inputs():
    from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS, BlockJob

    spec = INT4_ALGORITHMS.get("imatrix")
    assert spec.needs_calibration
    with pytest.raises(ValueError, match="'imatrix' needs calibration inputs"):
        spec.quantize(one_matmul(64, 8, np.ones((64, 8), np.float32)), BlockJob(32))
