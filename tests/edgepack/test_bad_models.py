"""Bad input is exit 2 with one line naming the user's file, never exit 3 ("a bug"), and a
failed check is exit 1 with its figures: models nobody should quantize or package, shapes too
big for memory, and Ctrl-C while edgepack is still starting."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.bench.conftest import matmul_add
from tests.edgepack.bad_models import bad_model, save_graph
from tests.edgepack.helpers import error_line, run_cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind, says", [
    ("no-inputs", "has no inputs"), ("no-outputs", "has no outputs"),
    ("duplicate-names", "two nodes named 'same'"), ("huge-shape", "MB available"),
])
def test_quantize_refuses_a_bad_model_in_one_line(tmp_path, capsys, kind, says):
    model = bad_model(tmp_path, kind)
    code, err = run_cli(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--mode",
                        "dynamic", "--allow-slower")
    line = error_line(err)
    assert code == 2 and says in line and model.name in line
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("kind, says", [
    ("no-inputs", "has no inputs"), ("no-outputs", "has no outputs"),
    ("duplicate-names", "two nodes named 'same'"),
])
def test_package_refuses_a_bad_model_in_one_line(tmp_path, capsys, kind, says):
    model = bad_model(tmp_path, kind)
    code, err = run_cli(capsys, "package", model, "-o", tmp_path / "pkg")
    assert code == 2 and says in error_line(err)
    assert not (tmp_path / "pkg").exists()


def test_nan_weights_fail_the_check_naming_the_weight(tmp_path, capsys):
    model = bad_model(tmp_path, "nan-weights")
    code, err = run_cli(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--mode",
                        "dynamic", "--allow-slower")
    assert code == 1 and "NaN or Inf in its weight 'W'" in err and "nan-weights.onnx" in err
    assert "AssertionError" not in err and not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_an_already_quantized_model_is_named_so(tmp_path, capsys, mode):
    model = matmul_add(tmp_path / "m.onnx")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((32, 16), np.float32))
    assert run_cli(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--mode", "static",
                   "--data", tmp_path / "calib.npz", "--allow-slower")[0] == 0
    code, err = run_cli(capsys, "quantize", tmp_path / "q.onnx", "-o", tmp_path / "q2.onnx",
                        "--mode", mode, "--data", tmp_path / "calib.npz", "--allow-slower")
    assert code == 2 and "q.onnx is already quantized" in error_line(err)


def test_a_temporary_file_is_never_named(tmp_path, capsys):
    """The fp16 copy of a model whose outputs overflow float16 is refused naming the user's
    file, not a scratch name such as full.onnx (the weights beyond float16's range stay in
    float32; the outputs, cast to float16 on their way out, overflow all the same)."""
    big = numpy_helper.from_array(np.full((16, 10), 1e5, np.float32), "W")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    model = save_graph(tmp_path / "overflow.onnx", [helper.make_node("MatMul", ["x", "W"], ["y"])],
                  [x], [y], [big])
    code, err = run_cli(capsys, "quantize", model, "-o", tmp_path / "q.onnx", "--mode", "fp16",
                        "--allow-slower", "--keep-io-fp32")
    assert code == 1 and "overflow.onnx" in err
    assert "full.onnx" not in err and "prepared.onnx" not in err


def test_an_export_shape_too_big_for_memory_is_refused_first(tmp_path, capsys):
    code, err = run_cli(capsys, "export", "--model", "edgepack.zoo:mnist1d_cnn",
                        "--input-shape", "100000000,1,40000", "-o", tmp_path / "m.onnx")
    assert code == 2 and "MB available" in error_line(err) and "--input-shape" in err
    assert not (tmp_path / "m.onnx").exists()


INTERRUPT_AT_IMPORT = textwrap.dedent('''
    import importlib.abc, os, signal, sys
    module = sys.argv[1]

    class InterruptWhenImported(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == module:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)   # a real Ctrl-C, while imports run
            return None

    sys.meta_path.insert(0, InterruptWhenImported())
    from edgepack.cli.main import main
    sys.exit(main(sys.argv[2:]))
''')


@pytest.mark.parametrize("module", ["onnx", "torch", "onnxruntime"])
def test_ctrl_c_while_starting_up_is_one_line_and_exit_130(tmp_path, module):
    model = matmul_add(tmp_path / "m.onnx")
    script = tmp_path / "interrupt.py"
    script.write_text(INTERRUPT_AT_IMPORT)
    done = subprocess.run([sys.executable, str(script), module, "bench", str(model), "--json",
                           str(tmp_path / "r.json")], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "edgepack: interrupted", done.stderr
    assert not (tmp_path / "r.json").exists()


def test_ctrl_c_while_a_command_runs_is_one_line(tmp_path, capsys, monkeypatch):
    def interrupted(*_args, **_kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("edgepack.bench.runner.bench", interrupted)
    model = matmul_add(tmp_path / "m.onnx")
    code, err = run_cli(capsys, "bench", model)
    assert code == 130 and err.strip() == "edgepack: interrupted"


@pytest.mark.parametrize("command", ["quantize", "bench"])
@pytest.mark.parametrize("label", [10, -1, 55])
def test_labels_outside_the_models_classes_are_refused_by_both_commands(tmp_path, capsys,
                                                                       command, label):
    model = matmul_add(tmp_path / "m.onnx")   # 10 classes: ids 0 to 9
    labels = np.arange(20) % 10
    labels[7] = label
    np.savez(tmp_path / "eval.npz", x=np.ones((20, 16), np.float32), labels=labels)
    argv = {"quantize": ["quantize", model, "-o", tmp_path / "q.onnx", "--mode", "dynamic",
                         "--eval-data", tmp_path / "eval.npz", "--allow-slower"],
            "bench": ["bench", model, "--data", tmp_path / "eval.npz", "--min-runs", "1",
                      "--min-time", "0"]}[command]
    code, err = run_cli(capsys, *argv)
    assert code == 2 and "the model outputs 10 classes (ids 0 to 9)" in error_line(err)
    assert not (tmp_path / "q.onnx").exists()
