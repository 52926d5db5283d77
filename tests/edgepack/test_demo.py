"""The demo's promises that a test can check quickly (the full demo is a benchmark:
benchmarks/demo_wall_time.py)."""

from pathlib import Path

import numpy as np
import torch

from edgepack.compress.prune import count_params
from edgepack.pipeline.recipe_runner import demo_recipe
from edgepack.pipeline.teacher import build_model
from edgepack.zoo.mnist1d_models import make_mnist1d


def test_demo_student_has_at_least_2x_fewer_parameters_yet_is_wide_enough_to_time():
    recipe = demo_recipe()
    teacher = build_model(recipe.model.build, recipe.model.args, None)
    student_spec = recipe.stages[0].student
    student = build_model(student_spec["build"], student_spec["args"], None)
    assert count_params(teacher) >= 2 * count_params(student)
    # At width 16 (3,274 parameters) ONNX Runtime's per-call cost hid every speed-up; after
    # pruning a quarter of its channels the student must still be at least 48 wide.
    assert student_spec["args"]["width"] * (1 - recipe.stages[1].ratio) >= 48


def test_demo_runs_every_stage_at_the_edge_profile():
    recipe = demo_recipe()
    assert [s.kind for s in recipe.stages] == ["distill", "prune", "export", "quantize"]
    distill, prune, _, quantize = recipe.stages
    assert distill.transfer_samples > 0 and 0 < distill.alpha < 1
    assert prune.method == "structured" and prune.expects_speedup
    assert (recipe.bench.threads, recipe.bench.batch) == (1, 1)
    assert recipe.tolerance == 0.01


def test_demo_sets_its_int8_format_itself_rather_than_taking_the_defaults():
    text = (Path(__file__).resolve().parents[2] / "edgepack" / "recipes" / "mnist1d.toml")
    stage = text.read_text().split('kind = "quantize"')[1].split("[bench]")[0]
    for setting in ('mode = "static"', 'format = "qdq"', 'activation_type = "uint8"',
                    "per_channel = true"):
        assert setting in stage
    quantize = demo_recipe().stages[3]
    assert (quantize.settings.activation_type, quantize.settings.per_channel) == ("uint8", True)
    # 7-bit weights or not depends on the CPU (saturation without VNNI): the preset decides,
    # when the model is quantized
    assert quantize.settings.preset == "auto" and quantize.settings.reduce_range is None
    assert "reduce_range" not in stage.replace("# reduce_range", "")


def test_the_example_recipe_is_the_demo_recipe_verbatim():
    root = Path(__file__).resolve().parents[2]
    assert (root / "examples" / "mnist1d.toml").read_bytes() == \
        (root / "edgepack" / "recipes" / "mnist1d.toml").read_bytes()


def test_demo_data_is_mnist1d_made_locally_with_a_fixed_seed():
    recipe = demo_recipe()
    assert recipe.data.provider == "edgepack.zoo:mnist1d"
    assert recipe.data.args["samples"] == 10_000
    a, b = make_mnist1d(200, seed=3), make_mnist1d(200, seed=3)
    assert a["x"].shape == (160, 40) and a["x_test"].shape == (40, 40)
    np.testing.assert_array_equal(a["x"], b["x"])
    assert not np.array_equal(a["x"], make_mnist1d(200, seed=4)["x"])


def test_making_the_data_leaves_numpys_global_generator_alone():
    np.random.seed(123)
    expected = np.random.rand(3)
    np.random.seed(123)
    make_mnist1d(50, seed=9)
    np.testing.assert_array_equal(np.random.rand(3), expected)


def test_validation_set_picks_epochs_and_shares_no_sample_with_evaluation():
    from edgepack.compress.trainer import selection_batches
    from edgepack.zoo.mnist1d_models import mnist1d

    data = mnist1d(samples=300, transfer_samples=10, validation_samples=100)
    assert selection_batches(data) is data["validation"]
    assert selection_batches({"evaluation": data["evaluation"]}) is data["evaluation"]
    validation = {tuple(x.flatten().tolist()) for x in data["validation"].dataset.tensors[0]}
    evaluation = {tuple(x.flatten().tolist()) for x in data["evaluation"].dataset.tensors[0]}
    assert len(validation) == 100 and not validation & evaluation


def _transfer_made_in_the_background(monkeypatch, tmp_path, executable=None):
    from edgepack.zoo import mnist1d_data
    from edgepack.zoo.mnist1d_models import TransferSet

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(mnist1d_data, "BACKGROUND_FROM", 0)   # a worker even for a small set
    if executable:
        monkeypatch.setattr(mnist1d_data.sys, "executable", executable)
    transfer = TransferSet(300, 5, batch_size=100, background=True)
    assert transfer._worker is not None                      # started at once, not on use
    return torch.cat(list(transfer)).squeeze(1).numpy()


def test_a_transfer_set_made_in_the_background_is_the_set_made_here(monkeypatch, tmp_path):
    made = _transfer_made_in_the_background(monkeypatch, tmp_path)
    expected = make_mnist1d(300, 5)
    np.testing.assert_array_equal(made, np.concatenate([expected["x"], expected["x_test"]]))
    assert (tmp_path / "edgepack" / "data" / "mnist1d-n300-seed5.npz").is_file()   # cached


def test_a_failed_worker_costs_time_never_different_data(monkeypatch, tmp_path):
    made = _transfer_made_in_the_background(monkeypatch, tmp_path, executable="/bin/false")
    expected = make_mnist1d(300, 5)
    np.testing.assert_array_equal(made, np.concatenate([expected["x"], expected["x_test"]]))


def test_there_is_a_transfer_set_only_when_asked_for():
    from edgepack.zoo.mnist1d_models import mnist1d

    assert "transfer" not in mnist1d(samples=300, validation_samples=0)
    assert len(mnist1d(samples=300, transfer_samples=10, validation_samples=0)["transfer"]) == 1
