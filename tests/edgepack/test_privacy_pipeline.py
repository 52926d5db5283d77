"""Privacy in a run: membership figures on every row, the DP teacher's guarantee and who
keeps it, and every recipe that cannot give an honest figure or claim refused first."""

from __future__ import annotations

import json
import textwrap

import pytest

from tests.edgepack.helpers import error_line, run_cli, run_cli_output

BASE = """
name = "privacy-test"
seed = 0
train_threads = 1
[model]
build = "edgepack.zoo:mnist1d_cnn"
args = {{ width = 16 }}
train_epochs = {epochs}
lr = {lr}
{dp}
[data]
provider = "edgepack.zoo:mnist1d"
args = {{ samples = 600, seed = 42, validation_samples = 200, transfer_samples = 1000, {data} }}
{public}
[[stages]]
kind = "distill"
student = {{ build = "edgepack.zoo:mnist1d_cnn", args = {{ width = 8 }} }}
epochs = 1
transfer_samples = 1000
tolerance = 1.0
{distill}
[[stages]]
kind = "export"
[[stages]]
kind = "quantize"
mode = "static"
allow_slower = true
tolerance = 1.0
[robustness]
samples = 0
attribution_samples = 0
[privacy]
{privacy}
"""


def recipe(tmp_path, epochs=4, lr=0.01, dp="", data="non_member_samples = 200",
           public="", distill="", privacy="samples = 150\nbootstrap = 30", name="r.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(BASE.format(epochs=epochs, lr=lr, dp=dp, data=data,
                                                public=public, distill=distill,
                                                privacy=privacy)))
    return path


def test_every_row_is_attacked_and_the_report_says_how(tmp_path, capsys):
    path = recipe(tmp_path, data="non_member_samples = 200, reference_sets = 2",
                  privacy='samples = 150\nbootstrap = 30\nattacks = ["loss", "entropy", '
                          '"lira"]\nreferences = 2')
    code, out, err = run_cli_output(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 0, err
    assert "(report.json, report.md, tradeoff.png, privacy.png, manifest.json)" in out
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    rows = [report["teacher"]] + [s for s in report["stages"] if "latency_ms" in s]
    assert len(rows) == 4
    for row in rows:
        privacy = row["privacy"]
        assert privacy["members"] == privacy["non_members"] == 150
        assert set(privacy["attacks"]) == {"loss", "entropy", "lira"}
        loss = privacy["attacks"]["loss"]
        assert 0 <= loss["auc_interval"][0] <= loss["auc"] <= loss["auc_interval"][1] <= 1
        assert privacy["references"] == 2
    # the export stage's file is the distilled model, byte for byte: the same figures
    assert rows[1]["privacy"]["attacks"] == rows[2]["privacy"]["attacks"]
    assert report["privacy"]["guarantees"]["teacher"].startswith("none")
    markdown = (tmp_path / "run" / "report.md").read_text()
    assert "## Privacy" in markdown and "| teacher | LiRA |" in markdown
    assert "calibrated on 2 reference models" in markdown
    assert (tmp_path / "run" / "privacy.png").read_bytes()[:4] == b"\x89PNG"
    assert "privacy.png" in json.loads((tmp_path / "run" / "manifest.json").read_text())["files"]


def test_an_over_fitted_teacher_leaks_more_than_a_fair_coin(tmp_path, capsys):
    """480 training samples, 40 epochs: members are fitted far better than non-members, and
    the loss attack's interval lies above 0.5 (the measurement moves)."""
    path = recipe(tmp_path, epochs=40, privacy="samples = 200\nbootstrap = 50")
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 0, err
    teacher = json.loads((tmp_path / "run" / "report.json").read_text())["teacher"]["privacy"]
    assert teacher["member_accuracy"] > teacher["non_member_accuracy"] + 0.1
    assert teacher["attacks"]["loss"]["auc_interval"][0] > 0.55


@pytest.mark.parametrize("data, privacy, message", [
    ("calibration_samples = 256", "samples = 150", "'non_members' set"),
    ("non_member_samples = 200", 'samples = 150\nattacks = ["lira"]\nreferences = 2',
     "'references'"),
    ("non_member_samples = 120", "samples = 150", "non_members set has 120"),
    ("non_member_samples = 200", "samples = 50", ">= 100"),
    ("non_member_samples = 200", 'samples = 150\nattacks = ["lira"]', "references >= 2"),
])
def test_privacy_settings_the_data_cannot_serve_are_refused_first(tmp_path, capsys, data,
                                                                  privacy, message):
    path = recipe(tmp_path, data=data, privacy=privacy)
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 2
    assert message in error_line(err)
    assert not (tmp_path / "run").exists()


def test_non_members_that_are_training_samples_are_refused(tmp_path, capsys):
    (tmp_path / "leaky_data.py").write_text(textwrap.dedent("""
        from edgepack.zoo import mnist1d

        def provider():
            data = mnist1d(samples=600, seed=42, validation_samples=200)
            data["non_members"] = data["train"]
            return data
    """))
    path = recipe(tmp_path)
    text = path.read_text().replace('provider = "edgepack.zoo:mnist1d"',
                                    'provider = "leaky_data:provider"')
    text = text.replace("args = { samples = 600, seed = 42, validation_samples = 200, "
                        "transfer_samples = 1000, non_member_samples = 200 }", "")
    text = text.replace("transfer_samples = 1000\n", "")
    path.write_text(text)
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 2
    assert "appear among both" in error_line(err)


DP = "dp = { epsilon = 4.0, delta = 1e-4, batch_size = 128 }"
PUBLIC = 'public = ["transfer", "calibration"]'
PRIVATE_DATA = "non_member_samples = 200, calibration_seed = 5000"


def test_a_dp_teacher_and_a_student_on_public_data_keep_the_guarantee(tmp_path, capsys):
    pytest.importorskip("opacus")
    path = recipe(tmp_path, epochs=2, lr=0.5, dp=DP, data=PRIVATE_DATA, public=PUBLIC,
                  distill="labelled = false\nalpha = 1.0")
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 0, err
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    dp = report["privacy"]["dp"]
    assert 0 < dp["epsilon"] <= 4.0 and dp["delta"] == 1e-4 and dp["private_samples"] == 480
    assert dp["steps"] > 0 and dp["noise_multiplier"] > 0
    guarantees = report["privacy"]["guarantees"]
    assert guarantees["teacher"].startswith(f"({dp['epsilon']:g}, 0.0001)-DP")
    assert all("by post-processing" in guarantees[s["name"]] for s in report["stages"])
    assert report["stages"][0]["record"]["labelled_samples"] == 0
    assert dp["secure_rng"] is False   # and report.md says what that means
    assert "Caveat: noise from torch's default generator" in \
        (tmp_path / "run" / "report.md").read_text()
    # a second run reads the teacher and its record from the cache: the same guarantee
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "again")
    assert code == 0 and "from cache" in err
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["privacy"]["dp"]["epsilon"] == dp["epsilon"]


@pytest.mark.parametrize("change, message", [
    ({"distill": ""}, "also trains on its private labelled data"),
    ({"public": 'public = ["transfer"]'}, "reads the 'calibration' set"),
    ({"public": 'public = ["transfer", "calibration", "train"]'}, "lists 'train'"),
    ({"dp": "dp = { epsilon = 4.0, sigma = 1.0 }"}, "unknown key 'sigma'"),
    ({"dp": "dp = { epsilon = -1.0 }"}, "epsilon must be in"),
    ({"distill": "labelled = false\nbaseline_lrs = [0.01]"}, "baseline_lrs"),
    ({"epochs": 0}, "train_epochs > 0"),
])
def test_a_dp_recipe_that_could_not_keep_its_claim_is_refused(tmp_path, capsys, change,
                                                             message):
    settings = {"epochs": 2, "lr": 0.5, "dp": DP, "data": PRIVATE_DATA, "public": PUBLIC,
                "distill": "labelled = false\nalpha = 1.0", **change}
    path = recipe(tmp_path, **settings)
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 2
    assert message in error_line(err)
    assert not (tmp_path / "run").exists()


def test_a_dp_teacher_with_pruning_that_fine_tunes_on_private_labels_is_refused(tmp_path,
                                                                                capsys):
    path = recipe(tmp_path, epochs=2, dp=DP, data=PRIVATE_DATA, public=PUBLIC,
                  distill="labelled = false")
    text = path.read_text().replace('[[stages]]\nkind = "export"',
                                    '[[stages]]\nkind = "prune"\nratio = 0.25\n'
                                    'finetune_epochs = 1\n[[stages]]\nkind = "export"')
    path.write_text(text)
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 2
    assert "stages[1] (prune)" in error_line(err) and "finetune_labelled" in err


def test_a_model_dp_sgd_cannot_train_is_refused_by_name(tmp_path, capsys):
    pytest.importorskip("opacus")
    (tmp_path / "bn_model.py").write_text(textwrap.dedent("""
        from torch import nn

        def build():
            return nn.Sequential(nn.Conv1d(1, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(),
                                 nn.Flatten(), nn.Linear(160, 10))
    """))
    path = recipe(tmp_path, epochs=1, dp=DP, data=PRIVATE_DATA, public=PUBLIC,
                  distill="labelled = false")
    path.write_text(path.read_text().replace('build = "edgepack.zoo:mnist1d_cnn"\n'
                                             'args = { width = 16 }', 'build = "bn_model:build"'))
    code, err = run_cli(capsys, "run", path, "--out", tmp_path / "run")
    assert code == 2
    assert "DP-SGD" in error_line(err) and "BatchNorm" in err
    assert not (tmp_path / "run").exists()
