"""A recipe that cannot run is refused before anything trains or is written: no stages, or a
budget no machine could finish (each bound is stated in the message)."""

from __future__ import annotations

import textwrap

import pytest

from tests.edgepack.helpers import error_line, run_cli

BASE = textwrap.dedent('''
    name = "r"
    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 4 }
    train_epochs = 1
    [data]
    args = { samples = 200, transfer_samples = 0, validation_samples = 0 }
''')
HUGE = 10 ** 12


def run_recipe_text(tmp_path, capsys, text):
    path = tmp_path / "recipe.toml"
    path.write_text(text)
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    return code, error_line(err)


def test_a_recipe_without_stages_is_refused(tmp_path, capsys, no_teacher):
    code, line = run_recipe_text(tmp_path, capsys, BASE)
    assert code == 2 and "no stages" in line and "[[stages]]" in line


def test_an_empty_stage_list_is_refused(tmp_path, capsys, no_teacher):
    code, line = run_recipe_text(tmp_path, capsys, BASE.replace('name = "r"',
                                                                'name = "r"\nstages = []'))
    assert code == 2 and "no stages" in line


@pytest.mark.parametrize("stage, field, bound", [
    ('kind = "distill"\nstudent = { build = "edgepack.zoo:mnist1d_cnn" }\n'
     f"epochs = {HUGE}", "distill.epochs", "10,000 epochs"),
    ('kind = "distill"\nstudent = { build = "edgepack.zoo:mnist1d_cnn" }\n'
     f"transfer_samples = {HUGE}", "distill.transfer_samples", "2,000,000 samples"),
    (f'kind = "prune"\nfinetune_epochs = {HUGE}', "prune.finetune_epochs", "10,000 epochs"),
    (f'kind = "prune"\nadversarial = {{ steps = {HUGE} }}', "adversarial.steps",
     "10,000 steps"),
])
def test_an_absurd_stage_budget_is_refused_by_its_bound(tmp_path, capsys, no_teacher,
                                                        stage, field, bound):
    code, line = run_recipe_text(tmp_path, capsys, BASE + f"[[stages]]\n{stage}\n")
    assert code == 2 and field in line and f"bound of {bound}" in line


def test_absurd_teacher_epochs_are_refused(tmp_path, capsys, no_teacher):
    text = BASE.replace("train_epochs = 1", f"train_epochs = {HUGE}")
    code, line = run_recipe_text(tmp_path, capsys, text + '[[stages]]\nkind = "export"\n')
    assert code == 2 and "train_epochs" in line and "10,000 epochs" in line


def test_absurd_attack_steps_are_refused(tmp_path, capsys, no_teacher):
    text = BASE + f'[robustness]\npgd_steps = {HUGE}\n[[stages]]\nkind = "export"\n'
    code, line = run_recipe_text(tmp_path, capsys, text)
    assert code == 2 and "robustness.pgd_steps" in line


def test_absurd_generated_data_is_refused_before_it_is_made(tmp_path, capsys):
    text = BASE.replace("samples = 200,", f"samples = {HUGE},")
    code, line = run_recipe_text(tmp_path, capsys, text + '[[stages]]\nkind = "export"\n')
    assert code == 2 and "mnist1d.samples" in line and "2,000,000 samples" in line
