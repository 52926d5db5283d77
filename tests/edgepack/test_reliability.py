"""Issue 12, as a hostile user tries it: a user's file is never touched, failures are one
line (exit 2, nothing written), results are never silently wrong, and a run folder can be
verified later. Each case is a row of a table or one small test; all assert."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from edgepack.core.files import atomic_write_json, same_file
from edgepack.pipeline.run_folder import is_edgepack_run
from edgepack.cli.main import main
from tests.edgepack.helpers import error_line, run_cli
from tests.bench.conftest import external_data_model, matmul_add


# ---------------------------------------------------------------- 1. a user's file is never touched


@pytest.mark.parametrize("alias", ["same", "symlink", "hardlink", "dotted"])
def test_bench_json_never_replaces_the_model(tmp_path, capsys, alias):
    model = matmul_add(tmp_path / "m.onnx")
    before = model.read_bytes()
    target = {"same": model, "symlink": tmp_path / "link.onnx", "hardlink": tmp_path / "hard",
              "dotted": tmp_path / "." / "m.onnx"}[alias]
    if alias == "symlink":
        target.symlink_to(model)
    if alias == "hardlink":
        os.link(model, target)
    code, err = run_cli(capsys, "bench", model, "--min-runs", 1, "--min-time", 0, "--json", target)
    assert code == 2 and "is the input file" in error_line(err)
    assert model.read_bytes() == before


def test_quantize_never_replaces_its_input(tmp_path, capsys):
    model = matmul_add(tmp_path / "m.onnx")
    before = model.read_bytes()
    code, err = run_cli(capsys, "quantize", model, "-o", model, "--mode", "dynamic")
    assert code == 2 and "-o/--output" in error_line(err)
    assert model.read_bytes() == before


def test_export_never_replaces_its_weights(tmp_path, capsys, monkeypatch):
    (tmp_path / "nets_linear.py").write_text("from torch import nn\n"
                                             "def net():\n    return nn.Linear(4, 2)\n")
    monkeypatch.chdir(tmp_path)
    from edgepack.export.weights import save_weights

    weights = save_weights(nn.Linear(4, 2), tmp_path / "w.onnx")
    before = weights.read_bytes()
    code, err = run_cli(capsys, "export", "--model", "nets_linear:net", "--input-shape", "1,4",
                        "--weights", weights, "-o", weights)
    assert code == 2 and "is the input file" in error_line(err)
    assert weights.read_bytes() == before


def test_package_refuses_a_folder_with_a_foreign_manifest(tmp_path, capsys):
    model = matmul_add(tmp_path / "m.onnx")
    out = tmp_path / "pkg"
    out.mkdir()
    (out / "manifest.json").write_text('{"mine": 1}')
    code, err = run_cli(capsys, "package", model, "-o", out)
    assert code == 2 and "not an edgepack package manifest" in error_line(err)
    assert (out / "manifest.json").read_text() == '{"mine": 1}'
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json"]


def test_package_writes_over_its_own_package(tmp_path, capsys):
    model = matmul_add(tmp_path / "m.onnx")
    out = tmp_path / "pkg"
    assert main(["package", str(model), "-o", str(out)]) == 0
    assert json.loads((out / "manifest.json").read_text())["edgepack_package"] is True
    assert main(["package", str(model), "-o", str(out)]) == 0


RECIPE = textwrap.dedent('''
    name = "r"
    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 4 }
    train_epochs = 1
    [data]
    args = { samples = 200, transfer_samples = 0, validation_samples = 0 }
    [[stages]]
    kind = "export"
''')


def test_resume_refuses_a_folder_that_is_not_a_run(tmp_path, capsys, no_teacher):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE)
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path, "--resume")
    assert code == 2 and "does not hold an edgepack run" in error_line(err)
    assert recipe.read_text() == RECIPE


def test_demo_refuses_a_non_empty_folder_before_training(tmp_path, capsys, no_teacher):
    (tmp_path / "notes.txt").write_text("mine")
    code, err = run_cli(capsys, "demo", "--out", tmp_path)
    assert code == 2 and "not empty" in error_line(err)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_recipe_asking_for_cuda_is_refused_before_training(tmp_path, capsys, no_teacher):
    if "CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers():
        pytest.skip("CUDA is available here")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE + '[bench]\nproviders = ["cuda"]\n')
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out")
    assert code == 2 and "CUDAExecutionProvider" in error_line(err)
    assert not (tmp_path / "out").exists()


def test_a_killed_run_without_a_manifest_is_recognised(tmp_path):
    (tmp_path / "00-teacher").mkdir()
    (tmp_path / "00-teacher" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "01-distill").mkdir()
    (tmp_path / "01-distill" / "config.json").write_text('{"kind": "distill"}')
    (tmp_path / ".scratch.abc").mkdir()
    assert is_edgepack_run(tmp_path)
    (tmp_path / "recipe.txt").write_text("a user's file")
    assert not is_edgepack_run(tmp_path)


def test_same_file_sees_through_links(tmp_path):
    a = tmp_path / "a"
    a.write_text("x")
    (tmp_path / "b").symlink_to(a)
    assert same_file(a, tmp_path / "b") and same_file(a, tmp_path / "sub" / ".." / "a")
    assert not same_file(a, tmp_path / "c")


# ---------------------------------------------------------------- 3. ORT pre-processing failures


def _opset99(path: Path) -> Path:
    model = onnx.load(str(matmul_add(path)))
    model.opset_import[0].version = 99
    onnx.save(model, str(path))
    return path


def _short_external_data(folder: Path) -> Path:
    model_path = external_data_model(folder)
    model = onnx.load(str(model_path), load_external_data=False)
    for tensor in model.graph.initializer:
        kept = [kv for kv in tensor.external_data if kv.key != "length"]
        del tensor.external_data[:]
        tensor.external_data.extend(kept)
    onnx.save(model, str(model_path))
    data = folder / "weights.bin"
    data.write_bytes(data.read_bytes()[:-100])
    return model_path


@pytest.mark.parametrize("make, command, expected", [
    (_opset99, "quantize", "declares opset 99"),
    (_opset99, "package", "declares opset 99"),
    (lambda p: _short_external_data(p.parent), "quantize", "truncated"),
])
def test_models_ort_cannot_read_are_one_line_and_nothing_written(tmp_path, capsys, make,
                                                                  command, expected):
    model = make(tmp_path / "m.onnx")
    out = tmp_path / "out" / ("q.onnx" if command == "quantize" else "pkg")
    argv = [command, model, "-o", out] + (["--mode", "dynamic"] if command == "quantize" else [])
    code, err = run_cli(capsys, *argv)
    assert code == 2 and expected in error_line(err)
    assert not out.exists() or not any(out.iterdir())


def test_package_of_a_model_ort_cannot_load_is_bad_input(tmp_path, capsys, monkeypatch):
    import onnxruntime.tools.convert_onnx_models_to_ort as converter

    def fail(*_args, **_kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 1 : FAIL : Deserialize tensor W failed")
    monkeypatch.setattr(converter, "convert_onnx_models_to_ort", fail)
    code, err = run_cli(capsys, "package", matmul_add(tmp_path / "m.onnx"), "-o", tmp_path / "p")
    assert code == 2 and "ONNX Runtime cannot load" in error_line(err)
    assert not (tmp_path / "p").exists()   # the folder it made is removed again


# ---------------------------------------------------------------- 4. resources


def test_a_batch_beyond_memory_is_refused_in_one_line(tmp_path, capsys):
    model = matmul_add(tmp_path / "m.onnx")
    code, err = run_cli(capsys, "bench", model, "--batch", 10 ** 12, "--min-runs", 1)  # 64 TB
    assert code == 2 and "MB available" in error_line(err)


def test_a_shape_beyond_memory_is_refused_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("edgepack.core.memory_budget.available_bytes", lambda: 1 << 20)  # 1 MB left
    model = matmul_add(tmp_path / "m.onnx", features=64)
    code, err = run_cli(capsys, "bench", model, "--batch", 4096, "--min-runs", 1)
    assert code == 2 and "needs about" in error_line(err)


def test_quantizing_beyond_memory_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("edgepack.core.memory_budget.available_bytes", lambda: 10)
    out = tmp_path / "q.onnx"
    code, err = run_cli(capsys, "quantize", matmul_add(tmp_path / "m.onnx"), "-o", out,
                        "--mode", "dynamic")
    assert code == 2 and "quantizing m.onnx needs about" in error_line(err)
    assert not out.exists()


# ---------------------------------------------------------------- 5. user mistakes are exit 2


def test_a_builder_that_raises_is_named(tmp_path, capsys, monkeypatch):
    (tmp_path / "nets_broken.py").write_text("def broken():\n    raise RuntimeError('no GPU here')\n")
    monkeypatch.chdir(tmp_path)
    code, err = run_cli(capsys, "export", "--model", "nets_broken:broken", "--input-shape", "1,4",
                        "-o", tmp_path / "m.onnx")
    line = error_line(err)
    assert code == 2 and "'nets_broken:broken'" in line and "no GPU here" in line
    assert not (tmp_path / "m.onnx").exists()


def test_an_hf_folder_with_only_a_pickle_asks_for_safetensors(tmp_path, capsys):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "pytorch_model.bin").write_bytes(b"PK\x03\x04 pickle")
    code, err = run_cli(capsys, "export", "--hf", folder, "--task", "feature-extraction",
                        "-o", tmp_path / "out")
    line = error_line(err)
    assert code == 2 and "safetensors" in line and "pytorch_model.bin" in line
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- 6. never silently wrong


def test_weights_with_another_output_size_are_refused(tmp_path):
    from edgepack.export.weights import load_weights, save_weights

    three = save_weights(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
                         tmp_path / "three.safetensors")
    with pytest.raises(ValueError, match=r"output layer tensor '2.weight' has shape \[3, 16\] "
                                         r"but the model's has shape \[4, 16\]"):
        load_weights(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), three)


def test_a_rank_1_weight_names_the_tensor_and_both_shapes(tmp_path):
    from safetensors.torch import save_file

    from edgepack.export.weights import load_weights

    path = tmp_path / "w.safetensors"
    save_file({"weight": torch.zeros(4), "bias": torch.zeros(2)}, str(path))
    with pytest.raises(ValueError, match=r"'weight' has shape \[4\] but the model's has shape "
                                         r"\[2, 4\] \(rank 1 vs 2\)"):
        load_weights(nn.Linear(4, 2), path)


def _nan_model(path: Path) -> Path:
    """y = x @ W with a NaN in W: every output row holds NaN."""
    weight = np.ones((4, 3), np.float32)
    weight[0, 0] = np.nan
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])], "nan",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        [numpy_helper.from_array(weight, "W")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_bench_does_not_report_accuracy_on_nan_outputs(tmp_path, capsys):
    model = _nan_model(tmp_path / "nan.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((8, 4), np.float32), labels=np.zeros(8, np.int64))
    code = main(["bench", str(model), "--data", str(data), "--min-runs", "1", "--min-time", "0",
                 "--json", str(tmp_path / "r.json")])
    captured = capsys.readouterr()
    assert code == 1 and "NaN or Inf" in captured.err and "Traceback" not in captured.err
    assert not (tmp_path / "r.json").exists()


def test_labels_outside_the_models_classes_are_refused(tmp_path, capsys):
    model = matmul_add(tmp_path / "m.onnx", classes=4)
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((8, 16), np.float32), labels=np.full(8, 7, np.int64))
    code, err = run_cli(capsys, "bench", model, "--data", data, "--min-runs", 1)
    assert code == 2 and "model outputs 4 classes" in error_line(err)


def test_a_provider_that_ran_no_node_is_refused(tmp_path, capsys):
    import onnxruntime as ort

    if "AzureExecutionProvider" not in ort.get_available_providers():
        pytest.skip("this onnxruntime has no AzureExecutionProvider")
    code, err = run_cli(capsys, "bench", matmul_add(tmp_path / "m.onnx"), "--provider",
                        "AzureExecutionProvider", "--min-runs", 1, "--min-time", 0)
    assert code == 2 and "took none of the" in error_line(err)


# ---------------------------------------------------------------- 8. clear messages


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return x + y


class TokenIds(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)

    def forward(self, ids):
        return self.embed(ids)


@pytest.mark.parametrize("builder", ["two_inputs", "token_ids"])
def test_a_model_that_cannot_take_the_example_input_is_bad_input(tmp_path, capsys,
                                                                 monkeypatch, builder):
    (tmp_path / f"nets_{builder}.py").write_text(
        "from tests.edgepack.test_reliability import TwoInputs, TokenIds\n"
        "def two_inputs():\n    return TwoInputs()\n"
        "def token_ids():\n    return TokenIds()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2]))
    code, err = run_cli(capsys, "export", "--model", f"nets_{builder}:{builder}", "--input-shape", "1,4",
                        "-o", tmp_path / "m.onnx")
    line = error_line(err)
    assert code == 2 and "does not run on the example input (float32[1, 4])" in line
    assert "dynamo" not in line and not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("target", ["/proc/self/edgepack.json", "/sys/edgepack.json"])
def test_system_folders_are_refused_by_name(tmp_path, capsys, target):
    code, err = run_cli(capsys, "bench", matmul_add(tmp_path / "m.onnx"), "--json", target)
    assert code == 2 and "system folder" in error_line(err) and ".tmp" not in err


def test_os_errors_read_as_words(tmp_path, capsys):
    code, err = run_cli(capsys, "bench", tmp_path / "missing.onnx")
    assert code == 2 and "[Errno" not in err


def test_negative_train_epochs_are_rejected(tmp_path, capsys, no_teacher):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.replace("train_epochs = 1", "train_epochs = -3"))
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out")
    assert code == 2 and "train_epochs must be >= 0, got -3" in error_line(err)


# ---------------------------------------------------------------- 9. recipes run code


@pytest.mark.parametrize("build", ["os:system", "subprocess:run", "builtins:eval",
                                   "shutil:rmtree", "sys:exit", "importlib:import_module",
                                   "collections:OrderedDict"])
def test_builders_from_the_standard_library_are_refused_before_import(tmp_path, capsys, build,
                                                                      no_teacher):
    marker = tmp_path / "ran"
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.replace('build = "edgepack.zoo:mnist1d_cnn"',
                                     f'build = "{build}"').replace(
        "args = { width = 4 }", f'args = {{ command = "touch {marker}" }}'))
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out")
    assert code == 2 and "--allow-any-builder" in error_line(err)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_a_denied_provider_is_refused_even_in_a_stage_student(tmp_path, capsys, no_teacher):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE.replace('kind = "export"', 'kind = "distill"\nstudent = '
                                     '{ build = "os:system", args = {} }\n\n[[stages]]\n'
                                     'kind = "export"'))
    code, err = run_cli(capsys, "run", recipe, "--out", tmp_path / "out")
    assert code == 2 and "student build 'os:system'" in error_line(err)


def test_allow_any_builder_lifts_the_check(tmp_path):
    from edgepack.pipeline.user_code import allow_any_builder, check_builder_module

    with pytest.raises(ValueError):
        check_builder_module("os:system", "builder")
    allow_any_builder(True)
    try:
        check_builder_module("os:system", "builder")
    finally:
        allow_any_builder(False)


# ---------------------------------------------------------------- 10. file modes


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode


# ---------------------------------------------------------------- 12. verify


def _run_folder(folder: Path) -> Path:
    from edgepack.pipeline.run_report import write_manifest

    (folder / "01-export").mkdir(parents=True)
    (folder / "01-export" / "model.onnx").write_bytes(b"model")
    (folder / "report.json").write_text("{}")
    (folder / ".scratch.x").mkdir()
    (folder / ".scratch.x" / "t.onnx").write_bytes(b"scratch")
    write_manifest(folder)
    return folder


def test_verify_passes_an_untouched_run(tmp_path, capsys):
    code = main(["verify", str(_run_folder(tmp_path / "run"))])
    assert code == 0 and "every file matches" in capsys.readouterr().out


def test_verify_names_changed_missing_and_extra_files(tmp_path, capsys):
    run = _run_folder(tmp_path / "run")
    (run / "01-export" / "model.onnx").write_bytes(b"tampered")
    (run / "report.json").unlink()
    (run / "extra.bin").write_bytes(b"?")
    code = main(["verify", str(run)])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert out == ["changed: 01-export/model.onnx", "missing: report.json", "extra: extra.bin"]


def test_verify_refuses_a_folder_without_a_run_manifest(tmp_path, capsys):
    (tmp_path / "manifest.json").write_text('{"files": {}}')
    code, err = run_cli(capsys, "verify", tmp_path)
    assert code == 2 and "not an edgepack run manifest" in error_line(err)
