"""Students cut from a transformer teacher: chosen layers, narrower feed-forward blocks."""

import os

import pytest
import torch
from torch import nn

from edgepack.compress.distill import distill_config, make_student
from edgepack.compress.layer_students import narrow_ffn, student_keeping_layers

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _bert(layers: int = 4, intermediate: int = 32):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=layers,
                                num_attention_heads=2, intermediate_size=intermediate)).eval()


def test_teacher_layers_student_keeps_exactly_the_named_layers():
    teacher = _bert(layers=4)
    student = make_student(teacher, distill_config(student_init="teacher-layers",
                                                  keep_layers=(0, 3)), None).eval()
    assert len(student.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    assert torch.equal(student.encoder.layer[1].output.dense.weight,
                       teacher.encoder.layer[3].output.dense.weight)
    assert student.encoder.layer[1].output.dense.weight is not \
        teacher.encoder.layer[3].output.dense.weight   # a copy: training leaves the teacher
    ids = torch.randint(0, 50, (1, 5))
    # Keeping every layer is the teacher itself.
    whole = student_keeping_layers(teacher, [0, 1, 2, 3]).eval()
    assert torch.allclose(whole(input_ids=ids).last_hidden_state,
                          teacher(input_ids=ids).last_hidden_state)


def test_narrow_ffn_keeps_the_strongest_neurons_and_the_block_output_shape():
    model = _bert(layers=2, intermediate=32)
    layer = model.encoder.layer[0]
    with torch.no_grad():   # make neurons 5 and 7 the strongest, unmistakably
        layer.intermediate.dense.weight[[5, 7]] *= 10
    up_before = layer.intermediate.dense.weight.detach().clone()
    assert narrow_ffn(model, 2) == 2
    assert layer.intermediate.dense.weight.shape == (2, 16)
    assert layer.output.dense.weight.shape == (16, 2)
    assert torch.equal(layer.intermediate.dense.weight, up_before[[5, 7]])
    assert model.config.intermediate_size == 2
    ids = torch.randint(0, 50, (2, 6))
    assert model(input_ids=ids).last_hidden_state.shape == (2, 6, 16)


def test_narrowing_to_full_width_changes_nothing():
    teacher = _bert(layers=2)
    student = make_student(teacher, distill_config(student_init="teacher-layers",
                                                  keep_layers=(0, 1), ffn_width=32), None)
    ids = torch.randint(0, 50, (1, 7))
    assert torch.allclose(student.eval()(input_ids=ids).last_hidden_state,
                          teacher(input_ids=ids).last_hidden_state, atol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"student_init": "teacher-layers"}, "keep_layers"),
    ({"keep_layers": (0, 2)}, "keep_layers"),
    ({"student_init": "teacher-layers", "keep_layers": (3, 1)}, "increasing order"),
    ({"student_init": "teacher-layers", "keep_layers": (1, 1)}, "distinct"),
    ({"ffn_width": 8}, "ffn_width"),
    ({"student_init": "every-kth-layer", "ffn_width": -1}, "ffn_width"),
])
def test_bad_layer_choices_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        distill_config(**kwargs)


def test_layers_or_width_beyond_the_teacher_are_refused():
    teacher = _bert(layers=4)
    with pytest.raises(ValueError, match=r"layers 0..3; got \[4\]"):
        make_student(teacher, distill_config(student_init="teacher-layers",
                                            keep_layers=(0, 4)), None)
    with pytest.raises(ValueError, match=r"ffn_width must be in 1..32"):
        make_student(teacher, distill_config(student_init="teacher-layers", keep_layers=(0,),
                                            ffn_width=64), None)
    with pytest.raises(ValueError, match="stack of repeated layers"):
        student_keeping_layers(nn.Linear(2, 3), [0])


def test_the_minilm_recipe_names_its_student_layers_and_they_survive_a_round_trip(tmp_path):
    from edgepack.pipeline.recipe import load_recipe, to_toml

    recipe = load_recipe("examples/minilm.toml")
    distill = recipe.stages[0]
    assert distill.student_init == "teacher-layers"
    assert tuple(distill.init.keep_layers) == (0, 4, 5)
    (tmp_path / "again.toml").write_text(to_toml(recipe))
    again = load_recipe(tmp_path / "again.toml").stages[0]
    assert again.init == distill.init
