"""Every output path of every command: never an input, never a file edgepack did not write
(unless --overwrite), the right suffix, and nothing written when refused."""

from __future__ import annotations

import numpy as np
import pytest

from tests.bench.conftest import matmul_add
from tests.edgepack.helpers import error_line, run_cli

QUICK_BENCH = ("--min-runs", "1", "--min-time", "0", "--warmup", "0")


@pytest.fixture
def model(tmp_path):
    return matmul_add(tmp_path / "cnn.onnx")


def test_keep_failed_equal_to_the_input_never_replaces_it(model, capsys):
    before = model.read_bytes()
    code, err = run_cli(capsys, "quantize", model, "-o", model.parent / "q.onnx", "--mode",
                        "dynamic", "--keep-failed", model, "--min-cosine", "1.0")
    assert code == 2 and "--keep-failed" in error_line(err) and "input" in error_line(err)
    assert model.read_bytes() == before and not (model.parent / "q.onnx").exists()


@pytest.mark.parametrize("argv, target, expected", [
    (("quantize", "{model}", "-o", "{target}", "--mode", "dynamic"), "notes.txt", ".onnx"),
    (("quantize", "{model}", "-o", "{out}", "--mode", "dynamic", "--keep-failed", "{target}"),
     "kept.txt", ".onnx"),
    (("bench", "{model}", "--json", "{target}", *QUICK_BENCH), "notes.txt", ".json"),
    (("bench", "{model}", "--markdown", "{target}", *QUICK_BENCH), "data.json", ".md"),
    (("bench", "{model}", "--plot", "{target}", *QUICK_BENCH), "plot.jpg", ".png"),
    (("export", "--model", "edgepack.zoo:mnist1d_cnn", "--input-shape", "1,1,40", "-o",
      "{target}"), "model.pt", ".onnx"),
])
def test_a_wrong_suffix_is_refused_and_the_file_left_alone(model, capsys, argv, target,
                                                           expected):
    target = model.parent / target
    target.write_text("the user's file")
    argv = [a.format(model=model, target=target, out=model.parent / "q.onnx") for a in argv]
    code, err = run_cli(capsys, *argv)
    assert code == 2 and f"must end in {expected}" in error_line(err)
    assert target.read_text() == "the user's file"


@pytest.mark.parametrize("argv, target", [
    (("quantize", "{model}", "-o", "{target}", "--mode", "dynamic", "--allow-slower"),
     "user.onnx"),
    (("bench", "{model}", "--json", "{target}", *QUICK_BENCH), "data.json"),
    (("bench", "{model}", "--markdown", "{target}", *QUICK_BENCH), "notes.md"),
    (("export", "--model", "edgepack.zoo:mnist1d_cnn", "--input-shape", "1,1,40", "-o",
      "{target}"), "user.onnx"),
])
def test_an_existing_user_file_is_refused_unless_overwrite(model, capsys, argv, target):
    target = model.parent / target
    target.write_text("the user's file")
    argv = [a.format(model=model, target=target) for a in argv]
    code, err = run_cli(capsys, *argv)
    assert code == 2 and "edgepack did not write" in error_line(err)
    assert target.read_text() == "the user's file"
    code, _ = run_cli(capsys, *argv, "--overwrite")
    assert code == 0 and target.read_bytes() != b"the user's file"


def test_each_command_writes_over_its_own_output(model, capsys):
    out, report, markdown = (model.parent / n for n in ("q.onnx", "r.json", "r.md"))
    for _ in range(2):
        assert run_cli(capsys, "quantize", model, "-o", out, "--mode", "dynamic",
                       "--allow-slower")[0] == 0
        assert run_cli(capsys, "bench", out, "--json", report, "--markdown", markdown,
                       *QUICK_BENCH)[0] == 0


def test_a_plot_over_a_user_png_is_refused(model, capsys, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    picture = tmp_path / "holiday.png"
    plt.figure(figsize=(1, 1)).savefig(picture)
    before = picture.read_bytes()
    np.savez(tmp_path / "eval.npz", x=np.ones((4, 16), np.float32), labels=np.arange(4))
    code, err = run_cli(capsys, "bench", model, "--data", tmp_path / "eval.npz", "--plot",
                        picture, *QUICK_BENCH)
    assert code == 2 and "edgepack did not write" in error_line(err)
    assert picture.read_bytes() == before


def test_package_never_writes_among_the_users_files(model, capsys, tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = run_cli(capsys, "package", model, "-o", ".")
    assert code == 2 and "not an edgepack package" in error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_package_writes_a_new_or_empty_folder(model, capsys, tmp_path):
    (tmp_path / "empty").mkdir()
    for folder in (tmp_path / "empty", tmp_path / "new"):
        assert run_cli(capsys, "package", model, "-o", folder)[0] == 0
        assert sorted(p.name for p in folder.iterdir()) == [
            "manifest.json", "model.ort", "required_operators.config"]
