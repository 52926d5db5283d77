"""``edgepack bench`` on the command line: outputs on success; one line and exit 2 on bad input."""

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from edgepack.cli.main import main
from tests.bench.conftest import external_data_model, matmul_add, reference_outputs

QUICK_FLAGS = ["--warmup", "1", "--min-runs", "3", "--min-time", "0"]
HAS_CUDA = "CUDAExecutionProvider" in ort.get_available_providers()


def test_table_json_markdown_and_plot(tmp_path, capsys):
    a, b = matmul_add(tmp_path / "a.onnx"), matmul_add(tmp_path / "b.onnx", seed=1)
    x = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x, labels=reference_outputs(x).argmax(1))
    out = {k: tmp_path / f"out.{k}" for k in ("json", "md", "png")}
    code = main(["bench", str(a), str(b), "--data", str(tmp_path / "eval.npz"), "--profile",
                 "edge", "--json", str(out["json"]), "--markdown", str(out["md"]),
                 "--plot", str(out["png"])] + QUICK_FLAGS)
    stdout = capsys.readouterr().out
    assert code == 0
    assert "a.onnx" in stdout and "b.onnx" in stdout and "p50 ms" in stdout
    results = json.loads(out["json"].read_text())
    assert [r["accuracy"] for r in results][0] == 1.0 and results[1]["accuracy"] < 1.0
    assert results[0]["settings"]["spin_wait"] is False and results[0]["threads"] == 1
    assert "| a.onnx |" in out["md"].read_text()
    assert out["png"].read_bytes()[:4] == b"\x89PNG"


def _not_onnx(tmp_path):
    path = tmp_path / "junk.onnx"
    path.write_bytes(b"\x00random bytes, not protobuf\xff" * 10)
    return [str(path)]


def _truncated(tmp_path):
    path = matmul_add(tmp_path / "full.onnx")
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return [str(cut)]


def _missing_external_data(tmp_path):
    path = external_data_model(tmp_path)
    (tmp_path / "weights.bin").unlink()
    return [str(path)]


def _model(tmp_path):
    return [str(matmul_add(tmp_path / "mm.onnx"))]


def _wrong_dtype_data(tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((4, 16), np.float64))
    return _model(tmp_path) + ["--data", str(tmp_path / "bad.npz")]


BAD_INPUTS = [
    (_not_onnx, "is not a valid ONNX model"),
    (_truncated, "ONNX"),
    (_missing_external_data, "weights.bin' of tensor"),
    (lambda p: _model(p) + ["--shape", "x=1,17"], "does not fit the declared shape"),
    (lambda p: _model(p) + ["--shape", "y=1,16"], "no input 'y'"),
    (lambda p: _model(p) + ["--shape", "x"], "expected NAME=D1,D2"),
    (lambda p: _model(p) + ["--provider", "abacus"], "unknown execution provider 'abacus'"),
    (lambda p: _model(p) + ["--profile", "tiny"], "unknown bench profile 'tiny'"),
    (lambda p: _model(p) + ["--graph-optimization", "max"], "graph_optimization='max'"),
    (lambda p: _model(p) + ["--plot", str(p / "out.png")], "needs --data with a 'labels'"),
    (_wrong_dtype_data, "dtype float64; expected float32"),
    (lambda p: [str(p / "missing.onnx")], "does not exist"),
]


@pytest.mark.parametrize("make_args, message", BAD_INPUTS,
                         ids=[m for _, m in BAD_INPUTS])
def test_bad_input_one_line_exit_2_nothing_written(tmp_path, capsys, make_args, message):
    args = make_args(tmp_path)
    out = tmp_path / "out.json"
    code = main(["bench", *args, "--json", str(out)] + QUICK_FLAGS)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not (tmp_path / "out.png").exists()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA; the missing-CUDA error cannot occur")
def test_cuda_without_cuda_is_exit_2_in_a_real_process(tmp_path):
    model = matmul_add(tmp_path / "mm.onnx")
    proc = subprocess.run([sys.executable, "-m", "edgepack", "bench", str(model), "--provider",
                           "cuda", "--json", str(tmp_path / "o.json")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "CUDAExecutionProvider is not available" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o.json").exists()
