"""Bad input on the command line: one clear line on stderr, exit code 2, nothing written."""

import subprocess
import sys

import pytest

from edgepack.cli.main import main

GOOD_HEAD = 'name = "t"\n[model]\nbuild = "edgepack.zoo:mnist1d_cnn"\n'


@pytest.mark.parametrize("recipe, message", [
    (GOOD_HEAD + '[[stages]]\nkind = "shrink"\n', "unknown stage kind 'shrink'"),
    (GOOD_HEAD + '[[stages]]\nkind = "prune"\nratoi = 0.5\n', "did you mean 'ratio'?"),
    (GOOD_HEAD + '[[stages]]\nkind = "prune"\nratio = "half"\n', "ratio must be a number"),
    (GOOD_HEAD + '[[stages]]\nkind = "prune"\nratio = 1.5\n', "outside [0.0, 1.0)"),
    ('seed = "zero"\n' + GOOD_HEAD, "seed must be an integer"),
    (GOOD_HEAD + 'seed = 0\n', "[model]: unknown key 'seed'"),  # a key under the wrong table
    ('name = 1\n[model]\nbuild = "x:y"\n', "name must be a string"),
    ("[model\n", "not valid TOML"),
])
def test_bad_recipe_gives_one_line_exit_2_and_writes_nothing(tmp_path, capsys, recipe, message):
    path = tmp_path / "recipe.toml"
    path.write_text(recipe)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_missing_recipe_file(tmp_path, capsys):
    code = main(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "missing.toml does not exist" in err
    assert not (tmp_path / "out").exists()


def test_output_folder_that_is_a_file_is_refused(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(GOOD_HEAD + 'args = { width = 4 }\n[data]\nargs = { samples = 100 }\n'
                      '[[stages]]\nkind = "export"\n')
    target = tmp_path / "taken"
    target.write_text("keep me")
    code = main(["run", str(recipe), "--out", str(target), "--no-progress"])
    assert code == 2
    assert "is an existing file" in capsys.readouterr().err
    assert target.read_text() == "keep me"


def test_unknown_builder_names_the_module(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nbuild = "no_such_module:net"\n[data]\nargs = { samples = 100 }\n'
                      '[[stages]]\nkind = "export"\n')
    code = main(["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "module 'no_such_module' not found" in err


def test_console_script_prints_no_traceback(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(GOOD_HEAD + '[[stages]]\nkind = "distil"\n')
    proc = subprocess.run([sys.executable, "-m", "edgepack", "run", str(path)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip()]  # exactly one line
    assert "did you mean 'distill'?" in proc.stderr
    assert not (tmp_path / "runs").exists()


def test_env_reports_versions_and_providers(capsys):
    assert main(["env"]) == 0
    out = capsys.readouterr().out
    for key in ("torch", "onnxruntime", "providers", "CPUExecutionProvider", "cpu", "flags"):
        assert key in out


def test_several_processes_without_torchrun_is_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    path = tmp_path / "recipe.toml"
    path.write_text(GOOD_HEAD + '[[stages]]\nkind = "export"\n')
    assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "WORLD_SIZE=2 but MASTER_ADDR is not set" in err and "torchrun" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stage, message", [
    ('student = { build = "edgepack.zoo:no_such_net" }\n', "has no 'no_such_net'"),
    ('student = { build = "edgepack.zoo:mnist1d_cnn" }\ntransfer_samples = 100\n',
     "gives no 'transfer' set"),
])
def test_distill_problems_are_found_before_the_run_folder_exists(tmp_path, capsys, stage,
                                                                 message):
    (tmp_path / "labelled_only.py").write_text(
        "from edgepack.zoo.mnist1d_models import mnist1d\n\n\ndef data():\n"
        "    sets = mnist1d(samples=100, transfer_samples=10)\n"
        "    del sets['transfer']\n    return sets\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\nbuild = "edgepack.zoo:mnist1d_cnn"\nargs = { width = 4 }\n'
                      '[data]\nprovider = "labelled_only:data"\n'
                      '[[stages]]\nkind = "distill"\n' + stage)
    code = main(["run", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert not (tmp_path / "out").exists()


def test_env_warns_when_both_onnxruntime_packages_are_installed(capsys, monkeypatch):
    import edgepack.bench.envinfo as envinfo

    monkeypatch.setattr(envinfo, "package_version", lambda name: "1.0")
    assert main(["env"]) == 0
    captured = capsys.readouterr()
    assert "onnxruntime and onnxruntime-gpu" in captured.out
    assert "both installed" in captured.err
