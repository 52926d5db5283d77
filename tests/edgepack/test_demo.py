"""The demo's promises that a test can check quickly (the full demo is a benchmark)."""

import numpy as np

from compress.prune import count_params
from edgepack.runner import demo_recipe
from edgepack.teacher import build_model
from edgepack.zoo import make_mnist1d


def test_demo_student_has_at_least_8x_fewer_parameters():
    recipe = demo_recipe()
    teacher = build_model(recipe.model.build, recipe.model.args, None)
    student_spec = recipe.stages[0].student
    student = build_model(student_spec["build"], student_spec["args"], None)
    assert count_params(teacher) >= 8 * count_params(student)


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
    from compress.trainer import selection_batches
    from edgepack.zoo import mnist1d

    data = mnist1d(samples=300, transfer_samples=10, validation_samples=100)
    assert selection_batches(data) is data["validation"]
    assert selection_batches({"evaluation": data["evaluation"]}) is data["evaluation"]
    validation = {tuple(x.flatten().tolist()) for x in data["validation"].dataset.tensors[0]}
    evaluation = {tuple(x.flatten().tolist()) for x in data["evaluation"].dataset.tensors[0]}
    assert len(validation) == 100 and not validation & evaluation
