"""Three kinds of failure, three exit codes: bad input 2, failed check 1, a bug 3."""

import argparse
import dataclasses
import json
import textwrap

import pytest

from edgepack.compress.quantize import QuantizeConfig
from edgepack.compress.trainer import TrainingDiverged
from edgepack.core.errors import BadInput, CheckFailed, MissingDependency, exit_code_for
from edgepack.cli import main as cli_main


@pytest.mark.parametrize("exc, code", [
    (ValueError("bad value"), 2), (FileNotFoundError("missing.onnx"), 2),
    (BadInput("bad"), 2), (MissingDependency("optimum", "hf", ImportError("boom")), 2),
    (CheckFailed("parity"), 1), (TrainingDiverged("loss nan"), 1),
    (KeyError("a bug"), 3), (TypeError("a bug"), 3), (AttributeError("a bug"), 3),
    (ModuleNotFoundError("No module named 'mnist1d'", name="mnist1d"), 2),
    (ModuleNotFoundError("No module named 'edgepack.compress.gone'",
                         name="edgepack.compress.gone"), 3),
])
def test_each_exception_kind_has_its_exit_code(exc, code):
    assert exit_code_for(exc) == code


def test_a_bug_says_so_and_how_to_report_it(monkeypatch, capsys):
    def broken(args):
        raise KeyError("stage_records")

    monkeypatch.setattr("edgepack.cli.env_cmd.handle", broken)
    assert cli_main.main(["env"]) == 3
    err = capsys.readouterr().err
    assert "internal error (a bug): KeyError" in err and "--debug" in err
    assert "edgepack env" in err and "Traceback" not in err


def test_quantize_flags_are_made_from_the_config_fields():
    """The shared fields and every method's own fields are flags, each once; the method's
    flags become its settings, a flag of another method is refused by name."""
    from edgepack.compress.quantize import METHODS
    from edgepack.cli import quantize_cmd

    sub = argparse.ArgumentParser().add_subparsers()
    quantize_cmd.register(sub)
    parser = sub.choices["quantize"]
    flags = {a.dest for a in parser._actions if a.option_strings and a.dest != "help"}
    fields = {f.name for f in dataclasses.fields(QuantizeConfig)} - {"method", "settings"}
    for spec in METHODS.specs():
        fields |= {f.name for f in dataclasses.fields(spec.settings)}
    assert fields | {"mode", "output", "data", "eval_data", "keep_failed", "overwrite"} == flags
    args = parser.parse_args(["m.onnx", "-o", "q.onnx", "--mode", "dynamic",
                              "--no-per-channel", "--accuracy-aware"])
    config = quantize_cmd.config_from_args(args)
    assert (config.method, config.settings.per_channel, config.settings.accuracy_aware) == (
        "dynamic", False, True)
    args = parser.parse_args(["m.onnx", "-o", "q.onnx", "--mode", "dynamic",
                              "--calibration", "entropy"])
    with pytest.raises(ValueError, match="'calibration' is a setting of quantize method "
                                         "'static', not of 'dynamic'"):
        quantize_cmd.config_from_args(args)
    help_text = " ".join(parser.format_help().split())
    assert "how to quantize: dynamic | static | fp16 | int4 (default static)" in help_text
    assert "per-channel weight scales [dynamic, static]" in help_text


RECIPE = textwrap.dedent('''
    name = "version"
    tolerance = 0.5
    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 4 }
    train_epochs = 1
    [data]
    args = { samples = 400, transfer_samples = 0, calibration_samples = 32 }
    [[stages]]
    kind = "export"
    [bench]
    min_runs = 5
    min_time_s = 0.01
    [robustness]
    samples = 0
''')


def test_resume_redoes_a_stage_written_with_another_config_version(tmp_path, capsys):
    (tmp_path / "recipe.toml").write_text(RECIPE)
    out = tmp_path / "out"
    argv = ["run", str(tmp_path / "recipe.toml"), "--out", str(out), "--no-progress"]
    assert cli_main.main(argv) == 0
    record_path = out / "01-export" / "record.json"
    record = json.loads(record_path.read_text())
    assert record["config_version"] == 1
    record["config_version"] = 0
    record_path.write_text(json.dumps(record))
    capsys.readouterr()
    assert cli_main.main(argv + ["--resume"]) == 0
    assert "made with config version 0, this edgepack writes 1: running it again" in \
        capsys.readouterr().err
    assert json.loads(record_path.read_text())["config_version"] == 1


@pytest.mark.parametrize("where", ["builder module", "data provider"])
def test_a_package_the_users_code_needs_is_named_not_called_a_bug(tmp_path, capsys, where):
    """The user's module exists; a package it imports (when imported, or when the data
    provider runs) is not installed: exit 2 naming the package, never 'module not found'
    or 'a bug'."""
    recipe = RECIPE
    if where == "builder module":
        # Module names of their own: a module another test writes under a common name
        # ("my_data") would be found in sys.modules instead.
        (tmp_path / "needs_pkg_models.py").write_text("import not_installed_pkg_xyz\n\n\n"
                                                      "def build(**kw):\n    pass\n")
        recipe = recipe.replace("edgepack.zoo:mnist1d_cnn", "needs_pkg_models:build")
    else:
        (tmp_path / "needs_pkg_data.py").write_text("def make(**kw):\n"
                                                    "    import not_installed_pkg_xyz.sub\n")
        recipe = recipe.replace("[data]\n", '[data]\nprovider = "needs_pkg_data:make"\n')
    (tmp_path / "recipe.toml").write_text(recipe)
    code = cli_main.main(["run", str(tmp_path / "recipe.toml"), "--out", str(tmp_path / "o"),
                          "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "the Python package 'not_installed_pkg_xyz' is not installed" in err
    assert "a bug" not in err and "not found (looked in" not in err
    assert not (tmp_path / "o").exists()
