"""Thresholds and budgets that are not numbers, on the command line and in a recipe: NaN, an
infinity, a negative tolerance or a budget no machine could finish is one ``edgepack: error:``
line naming the flag or field and what was expected, exit 2, before anything is read or
written; and a model whose outputs are NaN is exit 1 with the output named (issue 38,
points 4 and 6)."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from tests.bench.conftest import matmul_add
from tests.edgepack.bad_models import bad_model
from tests.edgepack.helpers import error_line, run_cli

BILLION = str(10 ** 9)

# (command line, what the line must say); {m}: a model, {d}: labelled data for it, {o}: where
# the command would write
FLAG_ERRORS = [
    (["package", "{m}", "-o", "{o}", "--atol", "nan"], "--atol=nan is not a finite number"),
    (["package", "{m}", "-o", "{o}", "--atol", "-1"],
     "--atol=-1.0 is out of range; expected a number >= 0"),
    (["package", "{m}", "-o", "{o}", "--rtol", "inf"], "--rtol=inf is not a finite number"),
    (["package", "{m}", "-o", "{o}", "--device-rtol=-inf"],
     "--device-rtol=-inf is not a finite number"),
    (["bench", "{m}", "--json", "{o}.json", "--min-time", "nan"],
     "--min-time=nan is not a finite number"),
    (["bench", "{m}", "--json", "{o}.json", "--min-time", "inf"],
     "--min-time=inf is not a finite number"),
    (["bench", "{m}", "--json", "{o}.json", "--min-time", "1e9"],
     "bench.min_time_s=1000000000.0 is out of range; expected a number in \\[0.0, 3600.0\\]"),
    (["bench", "{m}", "--json", "{o}.json", "--max-runs", BILLION],
     "bench.max_runs=1,000,000,000 is beyond the bound of 1,000,000 runs"),
    (["bench", "{m}", "--json", "{o}.json", "--warmup", BILLION],
     "bench.warmup=1,000,000,000 is beyond the bound of 1,000,000 runs"),
    (["bench", "{m}", "--json", "{o}.json", "--privacy", "--members", "{m}", "--non-members",
      "{m}", "--bootstrap", BILLION],
     "--bootstrap=1,000,000,000 is beyond the bound of 10,000 resamples"),
    (["bench", "{m}", "--json", "{o}.json", "--data", "{d}", "--robustness", "inf"],
     "--robustness 'inf' is not valid; expected positive numbers"),
    (["quantize", "{m}", "-o", "{o}.onnx", "--mode", "dynamic", "--min-cosine", "nan"],
     "--min-cosine=nan is not a finite number"),
    (["quantize", "{m}", "-o", "{o}.onnx", "--mode", "dynamic", "--tolerance", "inf"],
     "--tolerance=inf is not a finite number"),
    (["quantize", "{m}", "-o", "{o}.onnx", "--mode", "dynamic", "--speed-min-time-s", "nan"],
     "--speed-min-time-s=nan is not a finite number"),
    (["quantize", "{m}", "-o", "{o}.onnx", "--mode", "dynamic", "--speed-min-runs", BILLION],
     "quantize.speed_min_runs=1,000,000,000 is beyond the bound of 1,000,000 runs"),
]


@pytest.mark.parametrize("argv, says", FLAG_ERRORS,
                         ids=[" ".join(a[0:1] + a[-2:]) for a, _ in FLAG_ERRORS])
def test_a_flag_that_is_not_a_number_is_refused_before_any_work(tmp_path, capsys, argv, says):
    import re

    model = matmul_add(tmp_path / "m.onnx")
    data = tmp_path / "d.npz"
    np.savez(data, x=np.ones((4, 16), np.float32), labels=np.zeros(4, np.int64))
    out = tmp_path / "out"
    code, err = run_cli(capsys, *[a.format(m=model, d=data, o=out) for a in argv])
    assert code == 2, err
    assert re.search(says, error_line(err)), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.npz", "m.onnx"]   # nothing written


BASE = textwrap.dedent('''
    name = "r"
    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 4 }
    train_epochs = 1
    [data]
    args = { samples = 200, transfer_samples = 0, validation_samples = 0 }
''')
EXPORT = '[[stages]]\nkind = "export"\n'

RECIPE_ERRORS = [
    (EXPORT + '[metric]\nkind = "language-model"\nmax_perplexity_ratio = nan\n',
     "\\[metric\\] max_perplexity_ratio=nan is not a finite number"),
    (EXPORT + '[metric]\nkind = "embedding"\nmin_cosine = -inf\n',
     "\\[metric\\] min_cosine=-inf is not a finite number"),
    (EXPORT + '[[stages]]\nkind = "package"\natol = nan\n',
     "stages\\[1\\] \\(package\\).atol=nan is not a finite number"),
    (EXPORT + '[[stages]]\nkind = "package"\nrtol = inf\n',
     "stages\\[1\\] \\(package\\).rtol=inf is not a finite number"),
    (EXPORT + '[[stages]]\nkind = "package"\natol = -1.0\n',
     "package.atol=-1.0 is out of range; expected a number >= 0"),
    (EXPORT + '[[stages]]\nkind = "quantize"\nmode = "dynamic"\nmin_cosine = nan\n',
     "\\(quantize\\).min_cosine=nan is not a finite number"),
    ('[[stages]]\nkind = "prune"\nlr = inf\n', "\\(prune\\).lr=inf is not a finite number"),
    (EXPORT + "[bench]\nmin_time_s = nan\n",
     "recipe \\[bench\\].min_time_s=nan is not a finite number"),
    (EXPORT + "[robustness]\neps = [0.1, inf]\n",
     "recipe \\[robustness\\].eps=.*inf.* is not a finite number"),
    (EXPORT + f"[privacy]\nbootstrap = {BILLION}\n",
     "privacy.bootstrap=1,000,000,000 is beyond the bound of 10,000 resamples"),
    ("tolerance = nan\n" + EXPORT, "recipe: tolerance must be a number >= 0, got nan"),
]


@pytest.mark.parametrize("tail, says", RECIPE_ERRORS,
                         ids=[says.split("=")[0].replace("\\", "") for _, says in RECIPE_ERRORS])
def test_a_recipe_setting_that_is_not_a_number_is_refused_before_the_run_folder(
        tmp_path, capsys, no_teacher, tail, says):
    import re

    text = BASE + tail
    if tail.startswith("tolerance"):   # a top-level key goes before the first table
        text = tail.split("\n", 1)[0] + "\n" + BASE + tail.split("\n", 1)[1]
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "out")
    assert code == 2, err
    assert re.search(says, error_line(err)), err
    assert not (tmp_path / "out").exists()


def test_bench_of_a_model_whose_outputs_are_nan_is_exit_1_naming_the_output(tmp_path, capsys):
    model = bad_model(tmp_path, "nan-weights")
    out = tmp_path / "r.json"
    code, err = run_cli(capsys, "bench", model, "--json", out, "--min-runs", "1", "--min-time",
                        "0", "--warmup", "0")
    assert code == 1, err
    assert "nan-weights.onnx (output 'y') hold NaN or Inf" in err
    assert not out.exists()


def test_bench_with_labels_names_the_output_that_is_nan(tmp_path, capsys):
    model = bad_model(tmp_path, "nan-weights")
    data = tmp_path / "eval.npz"
    np.savez(data, x=np.ones((4, 16), np.float32), labels=np.zeros(4, np.int64))
    code, err = run_cli(capsys, "bench", model, "--data", data, "--json", tmp_path / "r.json",
                        "--min-runs", "1", "--min-time", "0", "--warmup", "0")
    assert code == 1 and "(output 'y') hold NaN or Inf" in err
    assert not (tmp_path / "r.json").exists()
