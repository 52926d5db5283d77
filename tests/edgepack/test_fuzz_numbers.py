"""Fuzzing numbers: random NaN, infinities and absurd budgets for every float flag, every
budget flag and every float setting of a recipe.

Whatever the value, edgepack must refuse it up front: exit 2, one ``edgepack: error:`` line
naming the flag or field, no traceback, and nothing written (no output file, no run folder).
Only invalid values are drawn, so no example ever runs a model, let alone a budget of 10**9;
``max_examples`` is small so the file runs in seconds.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgepack.core.checks import MAX_RESAMPLES, MAX_ROUNDS, MAX_RUNS, MAX_TOKENS
from edgepack.cli.main import main
from tests.bench.conftest import matmul_add
from tests.core.test_numbers import STAGE_FLOATS

FAST = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# spellings of NaN and the infinities that Python's float() (argparse's type) accepts
NOT_FINITE = st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "+inf", "Infinity",
                              "-Infinity", "1e400", "-1e999"])

# command, flag, whether the command writes (-o DIR / --json FILE)
FLOAT_FLAGS = [
    ("package", "--atol"), ("package", "--rtol"), ("package", "--device-atol"),
    ("package", "--device-rtol"), ("bench", "--min-time"), ("quantize", "--min-cosine"),
    ("quantize", "--tolerance"), ("quantize", "--min-top1-agreement"),
    ("quantize", "--min-centred-cosine"), ("quantize", "--max-norm-change"),
    ("quantize", "--held-out-fraction"), ("quantize", "--speed-min-time-s"),
]

# command line after the model, flag, its bound; {j}: a JSON output path
BUDGET_FLAGS = [
    (["bench", "--json", "{j}"], "--min-runs", MAX_RUNS),
    (["bench", "--json", "{j}"], "--max-runs", MAX_RUNS),
    (["bench", "--json", "{j}"], "--warmup", MAX_RUNS),
    (["bench", "--json", "{j}"], "--block-runs", MAX_RUNS),
    (["bench", "--generate", "--tokenizer", ".", "--json", "{j}"], "--rounds", MAX_ROUNDS),
    (["bench", "--generate", "--tokenizer", ".", "--json", "{j}"], "--new-tokens", MAX_TOKENS),
    (["bench", "--generate", "--tokenizer", ".", "--json", "{j}"], "--prompt-tokens",
     MAX_TOKENS),
    (["generate", "--prompt", "Hello"], "--max-new-tokens", MAX_TOKENS),
    (["quantize", "-o", "{j}.onnx", "--mode", "dynamic"], "--speed-min-runs", MAX_RUNS),
    (["bench", "--privacy", "--members", "m.npz", "--non-members", "n.npz", "--json", "{j}"],
     "--bootstrap", MAX_RESAMPLES),
]

OUTPUT = {"package": ["-o", "{o}"], "quantize": ["-o", "{o}.onnx", "--mode", "dynamic"],
          "bench": ["--json", "{o}.json"]}


def run_quietly(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(argv)
    return code, err.getvalue()


def assert_refused(argv, text: str, code: int, names: str, folder: Path, inputs: set) -> None:
    """Exit 2, one error line naming ``names``, no traceback, nothing new in ``folder``."""
    lines = [ln for ln in text.splitlines() if ln.startswith("edgepack: error:")]
    assert code == 2, f"{argv}: exit {code}: {text[-800:]}"
    assert len(lines) == 1 and names in lines[0], f"{argv}: {text}"
    assert "Traceback" not in text and "internal error" not in text, f"{argv}: {text}"
    assert {p.name for p in folder.iterdir()} == inputs, f"{argv} wrote something"


def with_model(test):
    """Run ``test(folder, model)`` in a fresh folder holding one small model."""
    folder = Path(tempfile.mkdtemp(prefix="edgepack-fuzz-numbers-"))
    try:
        test(folder, matmul_add(folder / "m.onnx"))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@FAST
@given(st.sampled_from(FLOAT_FLAGS), NOT_FINITE)
def test_a_float_flag_never_takes_nan_or_infinity(command_flag, value):
    command, flag = command_flag

    def test(folder, model):
        argv = [command, str(model), *[a.format(o=folder / "out") for a in OUTPUT[command]],
                f"{flag}={value}"]
        code, text = run_quietly(argv)
        assert_refused(argv, text, code, f"{flag}=", folder, {"m.onnx"})
    with_model(test)


@FAST
@given(st.sampled_from(BUDGET_FLAGS), st.data())
def test_a_budget_beyond_its_bound_is_refused_before_it_starts(case, data):
    command, flag, bound = case
    value = data.draw(st.integers(bound + 1, 10 ** 18) | st.sampled_from([10 ** 9, 10 ** 12]))

    def test(folder, model):
        argv = [command[0], str(model), *[a.format(j=folder / "r.json") for a in command[1:]],
                flag, str(value)]
        code, text = run_quietly(argv)
        assert_refused(argv, text, code, f"bound of {bound:,}", folder, {"m.onnx"})
    with_model(test)


RECIPE_HEAD = '''name = "fuzz"
{top}
[model]
build = "edgepack.zoo:mnist1d_cnn"
args = {{ width = 4 }}
{model}
[data]
args = {{ samples = 200, transfer_samples = 0, validation_samples = 0 }}
'''
EXPORT = '[[stages]]\nkind = "export"\n'


def _toml(kind: str, name: str) -> str:
    """The placeholder of a stage's float field: ``{v}``, or ``[{v}]`` for a list of them."""
    import typing

    from edgepack.core.stage import stage_spec

    hint = typing.get_type_hints(stage_spec(kind).config)[name]
    return "[{v}]" if typing.get_origin(hint) in (list, tuple) else "{v}"


# where a float can be written in a recipe: (top-level, [model], tables and stages after)
TABLE_FLOATS = [
    ("tolerance = {v}", "", EXPORT),
    ("", "lr = {v}", EXPORT),
    ("", "", EXPORT + '[metric]\nkind = "language-model"\nmax_perplexity_ratio = {v}\n'),
    ("", "", EXPORT + '[metric]\nkind = "language-model"\nmin_top1_agreement = {v}\n'),
    ("", "", EXPORT + '[metric]\nkind = "embedding"\nmin_spearman = {v}\n'),
    ("", "", EXPORT + "[bench]\nmin_time_s = {v}\n"),
    ("", "", EXPORT + "[robustness]\nattribution_threshold = {v}\n"),
    ("", "", EXPORT + "[robustness]\neps = [0.05, {v}]\n"),
    ("", "", "[[stages]]\nkind = \"prune\"\nadversarial = {{ eps = {v} }}\n"),
] + [("", "", f'[[stages]]\nkind = "{kind}"\n{name} = {_toml(kind, name)}\n')
      for kind, name in STAGE_FLOATS]


@FAST
@given(st.sampled_from(TABLE_FLOATS), st.sampled_from(["nan", "+nan", "-nan", "inf", "+inf",
                                                        "-inf"]))
def test_a_recipe_float_that_is_not_finite_is_refused_before_the_run_folder(where, value):
    top, model, tail = (part.format(v=value) for part in where)
    folder = Path(tempfile.mkdtemp(prefix="edgepack-fuzz-recipe-"))
    try:
        recipe = folder / "recipe.toml"
        recipe.write_text(RECIPE_HEAD.format(top=top, model=model) + tail)
        argv = ["run", str(recipe), "--out", str(folder / "out")]
        code, text = run_quietly(argv)
        assert_refused(argv, text, code, "", folder, {"recipe.toml"})
        line = next(ln for ln in text.splitlines() if ln.startswith("edgepack: error:"))
        assert "finite" in line or "must be a number" in line or "must all be > 0" in line, line
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_fuzzed_models_are_valid(tmp_path):
    """The model every example is given runs: the refusals come from the values alone."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(matmul_add(tmp_path / "m.onnx")))
    assert session.run(None, {"x": np.ones((1, 16), np.float32)})[0].shape == (1, 10)
