"""Offline ONNX Runtime graph optimization: a separate model, parity checked again."""

import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
import torch
from torch import nn

from edgepack.export.optimize import LEVELS, optimize_onnx
from edgepack.export.parity import ParityError
from edgepack.export.torch_export import ExportConfig, export_onnx
from tests.export.tiny import cpu_session, run_onnx


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_writes_a_separate_model_that_matches(tmp_path, exported, level):
    target = tmp_path / f"model.{level}.onnx"
    before = exported.read_bytes()
    result = optimize_onnx(exported, level, target)
    assert exported.read_bytes() == before  # the original is untouched
    record = result.record
    assert record["level"] == level and record["parity"]["ok"]
    assert [o["batch"] for o in record["parity"]["outputs"]] == [1, 4]
    assert record["nodes"] <= record["nodes_before"]
    x = np.random.default_rng(0).standard_normal((3, 1, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(target, x)[0], run_onnx(exported, x)[0], atol=1e-5)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temp left


def test_extended_fuses_nodes(tmp_path, exported):
    result = optimize_onnx(exported, "extended", tmp_path / "opt.onnx")
    assert result.record["nodes"] < result.record["nodes_before"]


def test_given_parity_inputs_are_used(tmp_path, exported):
    feeds = [{"input": np.ones((b, 1, 16), np.float32)} for b in (2, 5)]
    result = optimize_onnx(exported, "basic", tmp_path / "opt.onnx", parity_inputs=feeds)
    assert [o["batch"] for o in result.record["parity"]["outputs"]] == [2, 5]


def test_external_data_stays_external(tmp_path):
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))
    source = tmp_path / "src" / "model.onnx"
    export_onnx(model, ExportConfig(external_data_threshold=1000), torch.randn(2, 64), source)
    target = tmp_path / "opt" / "model.opt.onnx"
    result = optimize_onnx(source, "basic", target)
    assert (tmp_path / "opt" / "model.opt.onnx.data").is_file()
    assert result.record["parity"]["ok"]
    cpu_session(target)  # loads with its data file


def perturbing_optimizer(real_save):
    """An optimizer that saves a subtly wrong model: one weight shifted by 0.5."""

    def save(path, level, target, external_data):
        real_save(path, level, target, external_data)
        model = onnx.load(str(target))
        weight = next(t for t in model.graph.initializer
                      if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2)
        weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) + 0.5,
                                                weight.name))
        onnx.save(model, str(target))

    return save


def test_mismatch_raises_parity_error(tmp_path, exported, monkeypatch):
    import edgepack.export.optimize as optimize

    monkeypatch.setattr(optimize, "_save_optimized",
                        perturbing_optimizer(optimize._save_optimized))
    with pytest.raises(ParityError, match="basic-optimized model's outputs differ") as info:
        optimize_onnx(exported, "basic", tmp_path / "opt.onnx")
    assert info.value.exit_code == 1
    assert "\u2717 logits (batch 1)" in str(info.value)
    assert not (tmp_path / "opt.onnx").exists()  # a failed check leaves nothing behind
    result = optimize_onnx(exported, "basic", tmp_path / "opt.onnx", fail_on_mismatch=False)
    assert result.record["parity"]["ok"] is False


@pytest.mark.parametrize("level, out_name, expected", [
    ("fast", "opt.onnx", "expected one of 'basic', 'extended', 'all'"),
    ("basic", "opt.txt", "must end in .onnx"),
    ("basic", "model.onnx", "is the input model"),
])
def test_bad_arguments(tmp_path, exported, level, out_name, expected):
    with pytest.raises(ValueError, match=expected):
        optimize_onnx(exported, level, tmp_path / out_name)


def test_random_bytes_are_refused_before_onnx_runtime(tmp_path):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        optimize_onnx(bogus, "basic", tmp_path / "opt.onnx")
