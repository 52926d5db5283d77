"""Mobile packaging: .ort model, reduced-operator config and manifest."""

import argparse
import json
import os

import numpy as np
import pytest

from edgepack.core.files import sha256_file
from edgepack.export.package import MANIFEST, OPERATORS_CONFIG, package_model, read_operators_config
from tests.export.tiny import run_onnx


def test_package_writes_ort_config_and_manifest(tmp_path, exported):
    out = tmp_path / "pkg"
    manifest = package_model(exported, out)
    assert sorted(os.listdir(out)) == [MANIFEST, "model.ort", OPERATORS_CONFIG]
    assert json.loads((out / MANIFEST).read_text()) == manifest
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == sha256_file(out / name)
        assert entry["size_bytes"] == (out / name).stat().st_size
    assert manifest["source"]["sha256"] == sha256_file(exported)
    assert manifest["size_bytes"] == (out / "model.ort").stat().st_size
    assert manifest["opset"]["ai.onnx"] == 18
    assert manifest["inputs"] == [{"name": "input", "type": "float", "shape": ["batch", 1, 16]}]
    assert manifest["outputs"][0]["name"] == "logits"
    assert manifest["parity"]["ok"]


def test_required_operators_match_the_config_file(tmp_path, exported):
    manifest = package_model(exported, tmp_path / "pkg")
    config = (tmp_path / "pkg" / OPERATORS_CONFIG).read_text()
    assert str(tmp_path) not in config  # no scratch paths leak into the package
    operators = manifest["required_operators"]
    assert operators == read_operators_config(tmp_path / "pkg" / OPERATORS_CONFIG)
    every_op = {op for opsets in operators.values() for ops in opsets.values() for op in ops}
    assert "Gemm" in every_op or "MatMul" in every_op
    rule = next(line for line in config.splitlines() if not line.startswith("#"))
    domain, opset, ops = rule.split(";")
    assert opset.isdigit() and ops


def test_ort_model_loads_and_matches_the_onnx_model(tmp_path, exported):
    package_model(exported, tmp_path / "pkg")
    x = np.random.default_rng(3).standard_normal((5, 1, 16)).astype(np.float32)
    np.testing.assert_allclose(run_onnx(tmp_path / "pkg" / "model.ort", x)[0],
                               run_onnx(exported, x)[0], atol=1e-5)


def test_bad_inputs_write_nothing(tmp_path, exported):
    bogus = tmp_path / "bogus.onnx"
    bogus.write_bytes(os.urandom(128))
    with pytest.raises(ValueError, match="not a valid ONNX model"):
        package_model(bogus, tmp_path / "pkg")
    assert not (tmp_path / "pkg").exists()
    with pytest.raises(FileNotFoundError):
        package_model(tmp_path / "missing.onnx", tmp_path / "pkg")
    taken = tmp_path / "taken"
    taken.write_text("a file")
    with pytest.raises(ValueError, match="existing file"):
        package_model(exported, taken)


def test_cli_handle(tmp_path, exported, capsys):
    from edgepack.cli import package_cmd

    parser = argparse.ArgumentParser()
    package_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["package", str(exported), "-o", str(tmp_path / "pkg")])
    assert args.handler(args) == 0
    printed = capsys.readouterr().out
    assert "\u2713 logits (batch 1)" in printed and "model.ort" in printed
    assert (tmp_path / "pkg" / MANIFEST).is_file()


def test_an_int8_qdq_model_is_packaged_against_its_own_int8_kernels(tmp_path, exported):
    """Run as written, Q/DQ computes in float; the .ort runs fused int8 kernels. The reference
    is ORT's optimized session of the same file, so int8 rounding is not a parity failure."""
    from edgepack.compress.quantize import quantize_config, quantize

    calibration = {"input": np.random.default_rng(0).standard_normal((16, 1, 16), np.float32)}
    # A tiny random model on 16 rows: packaging is tested here, not int8 speed or accuracy
    # (those checks are off explicitly).
    unchecked = quantize_config(mode="static", speed_check=False, latency_aware=False,
                               min_cosine=-1.0, min_top1_agreement=0.0)
    quantize(exported, unchecked, tmp_path / "int8.onnx", calibration)
    manifest = package_model(tmp_path / "int8.onnx", tmp_path / "pkg")
    assert manifest["parity"]["ok"] and manifest["parity"]["reference"] == "optimized (Q/DQ graph)"
    assert package_model(exported, tmp_path / "fp32")["parity"]["reference"] == "as written"
