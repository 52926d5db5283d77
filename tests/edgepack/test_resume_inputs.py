"""``--resume`` continues the same run: another recipe, other weights or another teacher is
refused with exit 2 naming what changed, and nothing in the run folder is written or changed.

One tiny run (an export of an untrained MNIST-1D CNN, seconds) is made once; each case
resumes a copy of it.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap

import pytest

from edgepack.pipeline.run_inputs import INPUTS_FILE
from tests.edgepack.helpers import error_line, run_cli

MODEL_CODE = textwrap.dedent('''
    import torch
    from torch import nn

    SEED = 3

    def tiny():
        torch.manual_seed(SEED)
        return nn.Sequential(nn.Flatten(), nn.Linear(40, 10))
''')

RECIPE = textwrap.dedent('''
    name = "resume-inputs"
    tolerance = 1.0
    [model]
    build = "tiny_model:tiny"
    weights = "{weights}"
    [data]
    args = {{ samples = 300, transfer_samples = 0, calibration_samples = 16 }}
    [[stages]]
    kind = "export"
    exporter = "torchscript"
    [bench]
    min_runs = 3
    min_time_s = 0.0
    warmup = 1
    [robustness]
    samples = 0
''')


def _save_weights(path, seed: int) -> None:
    import torch
    from torch import nn

    from edgepack.export.weights import save_weights

    torch.manual_seed(seed)
    save_weights(nn.Sequential(nn.Flatten(), nn.Linear(40, 10)), path)


def snapshot(folder) -> dict:
    """Every entry under ``folder`` (hidden ones too) with its bytes: what must not change."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A recipe folder (model code, weights, recipe) and a finished run made from it."""
    from edgepack.cli.main import main

    folder = tmp_path_factory.mktemp("resume-inputs")
    (folder / "tiny_model.py").write_text(MODEL_CODE)
    _save_weights(folder / "w.safetensors", seed=0)
    (folder / "recipe.toml").write_text(RECIPE.format(weights="w.safetensors"))
    assert main(["run", str(folder / "recipe.toml"), "--out", str(folder / "run"),
                 "--no-progress"]) == 0
    return folder


@pytest.fixture
def case(finished, tmp_path):
    """A private copy of the recipe folder and its run."""
    folder = tmp_path / "case"
    shutil.copytree(finished, folder, ignore=shutil.ignore_patterns("__pycache__"))
    return folder


def _resume(capsys, folder) -> tuple[int, str]:
    return run_cli(capsys, "run", folder / "recipe.toml", "--out", folder / "run", "--resume",
                   "--no-progress")


def test_the_run_records_its_inputs_in_its_manifest(finished):
    record = json.loads((finished / "run" / INPUTS_FILE).read_text())
    assert record["recipe"]["model"]["weights"] == "w.safetensors"
    assert list(record["files"]) == ["model.weights"]
    assert record["files"]["model.weights"]["size_bytes"] > 0
    assert len(record["teacher_sha256"]) == 64
    manifest = json.loads((finished / "run" / "manifest.json").read_text())
    assert INPUTS_FILE in manifest["files"]


def test_resume_with_the_same_inputs_reuses_the_run(case, capsys):
    code, err = _resume(capsys, case)
    assert code == 0 and "[01-export] done in an earlier run" in err


def _edit_recipe(folder, old: str, new: str) -> None:
    path = folder / "recipe.toml"
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new))


@pytest.mark.parametrize("old, new, named", [
    ("tolerance = 1.0", "tolerance = 0.001", "recipe key tolerance was 1.0, now 0.001"),
    ('exporter = "torchscript"', 'exporter = "dynamo"', "recipe key stages[0].exporter"),
    ("samples = 300", "samples = 301", "recipe key data.args.samples was 300, now 301"),
    ('name = "resume-inputs"', 'name = "mnist"', "recipe key name"),
    ("min_runs = 3", "min_runs = 4", "recipe key bench.min_runs"),
    ('weights = "w.safetensors"', 'weights = "other.safetensors"', "recipe key model.weights"),
])
def test_resume_with_another_recipe_is_refused_naming_the_key(case, capsys, old, new, named):
    _save_weights(case / "other.safetensors", seed=0)
    _edit_recipe(case, old, new)
    before = snapshot(case / "run")
    code, err = _resume(capsys, case)
    line = error_line(err)
    assert code == 2 and named in line and str(case / "run") in line, line
    assert snapshot(case / "run") == before


def test_resume_with_other_weights_in_the_same_file_is_refused_naming_it(case, capsys):
    _save_weights(case / "w.safetensors", seed=1)     # the same name, another model
    before = snapshot(case / "run")
    code, err = _resume(capsys, case)
    line = error_line(err)
    assert code == 2 and f"file {case / 'w.safetensors'} (model.weights) changed" in line
    assert snapshot(case / "run") == before


def test_resume_with_another_teacher_is_refused(tmp_path, capsys, monkeypatch):
    """No recipe key and no named file changed, but the builder now makes another model."""
    from edgepack.cli.main import main

    folder = tmp_path / "built"
    folder.mkdir()
    (folder / "built_model.py").write_text(MODEL_CODE)
    (folder / "recipe.toml").write_text(RECIPE.format(weights="").replace(
        "tiny_model:tiny", "built_model:tiny"))
    assert main(["run", str(folder / "recipe.toml"), "--out", str(folder / "run"),
                 "--no-progress"]) == 0
    (folder / "built_model.py").write_text(MODEL_CODE.replace("SEED = 3", "SEED = 4"))
    monkeypatch.delitem(sys.modules, "built_model")    # the edited code is imported afresh
    capsys.readouterr()
    before = snapshot(folder / "run")
    code, err = _resume(capsys, folder)
    line = error_line(err)
    assert code == 2 and "the teacher's weights differ" in line
    assert snapshot(folder / "run") == before


@pytest.mark.parametrize("damage", ["missing", "not json", "a folder"])
def test_resume_of_a_run_without_its_record_is_refused(case, capsys, damage):
    record = case / "run" / INPUTS_FILE
    record.unlink()
    if damage == "not json":
        record.write_text("{")
    elif damage == "a folder":
        record.mkdir()
    before = snapshot(case / "run")
    code, err = _resume(capsys, case)
    line = error_line(err)
    assert code == 2 and f"{record}" in line and "choose another --out" in line
    assert snapshot(case / "run") == before


def test_a_killed_run_with_only_its_record_is_an_edgepack_run(tmp_path):
    from edgepack.pipeline.run_folder import is_edgepack_run

    (tmp_path / INPUTS_FILE).write_text(json.dumps({"edgepack_run": True, "recipe": {}}))
    (tmp_path / ".edgepack.lock").write_text("1\n")
    assert is_edgepack_run(tmp_path)
    (tmp_path / INPUTS_FILE).write_text(json.dumps({"recipe": {}}))
    assert not is_edgepack_run(tmp_path)
