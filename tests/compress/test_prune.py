"""Pruning: structured (torch-pruning DepGraph) and unstructured (masks), and bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.compress.prune import (PruneConfig, UntraceableModelError, cubic_schedule,
                                     epochs_per_step, find_head, prune)


def tiny_cnn(width=16, classes=4):
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv1d(1, width, 3, padding=1), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Conv1d(width, width, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(width * 8, classes))


EXAMPLE = torch.randn(1, 1, 16)


def _data(n=128):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 16, generator=g)
    y = (x[:, 0, :8].mean(-1) > 0).long() + 2 * (x[:, 0, 8:].mean(-1) > 0).long()
    return {"train": DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
            "evaluation": DataLoader(TensorDataset(x, y), batch_size=64)}


# ------------------------------------------------------------------ structured


def test_structured_prune_halves_channels_and_keeps_the_head():
    model = tiny_cnn()
    result = prune(model, PruneConfig(method="structured", ratio=0.5), EXAMPLE, progress=False)
    record = result.artifact is model and result.record
    assert record["params_after"] < record["params_before"]
    assert record["macs_after"] < record["macs_before"]
    assert record["macs_ratio"] > 2.0  # both convs lose half their channels
    assert model[0].out_channels == 8 and model[3].out_channels == 8
    assert model[6].out_features == 4  # the head's outputs are the classes
    assert record["ignored_layers"] == ["6"]
    assert model(EXAMPLE).shape == (1, 4)


def test_round_to_keeps_channel_counts_multiples():
    model = tiny_cnn(width=24)
    prune(model, PruneConfig(ratio=0.5, round_to=8), EXAMPLE, progress=False)
    assert model[0].out_channels % 8 == 0 and model[0].out_channels < 24


def test_ignored_layers_are_not_pruned():
    model = tiny_cnn()
    prune(model, PruneConfig(ratio=0.5, ignored_layers=("0",)), EXAMPLE, progress=False)
    assert model[0].out_channels == 16 and model[3].out_channels == 8


def test_iterative_steps_finetune_between_steps_and_record_each():
    model = tiny_cnn()
    result = prune(model, PruneConfig(ratio=0.5, iterative_steps=2, finetune_epochs=4, lr=0.01),
                   EXAMPLE, data=_data(), progress=False)
    steps = result.record["steps"]
    assert [s["step"] for s in steps] == [1, 2]
    assert steps[0]["params"] > steps[1]["params"] == result.record["params_after"]
    assert [s["finetune_epochs"] for s in steps] == [2, 2]
    assert 0.0 <= result.record["accuracy_after_finetune"] <= 1.0


def test_finetune_with_a_teacher_uses_its_soft_targets():
    teacher, student = tiny_cnn(), tiny_cnn()
    calls = []
    original_forward = teacher.forward

    def counting_forward(x):
        calls.append(x.shape[0])
        return original_forward(x)

    teacher.forward = counting_forward
    prune(student, PruneConfig(ratio=0.5, finetune_epochs=1), EXAMPLE, data=_data(),
          teacher=teacher, progress=False)
    assert sum(calls) == 128  # one epoch over the training set, the teacher on each batch


def test_finetune_transfer_samples_need_a_teacher():
    with pytest.raises(ValueError, match="needs a teacher"):
        prune(tiny_cnn(), PruneConfig(finetune_epochs=1, finetune_transfer_samples=10),
              EXAMPLE, data=_data(), progress=False)


class ChannelShuffle(nn.Module):
    """Mixes channels with a reshape that torch-pruning cannot follow."""

    def __init__(self):
        super().__init__()
        self.first = nn.Conv1d(1, 8, 3)
        self.second = nn.Conv1d(8, 8, 3)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        y = self.first(x)
        b, c, length = y.shape
        y = y.view(b, 2, 4, length).transpose(1, 2).reshape(b, 8, length)
        return self.head(self.second(y).mean(-1))


def test_a_model_torch_pruning_cannot_follow_names_the_layer():
    with pytest.raises(UntraceableModelError, match=r"after layer 'first'.*add 'first' to "
                                                    r"prune.ignored_layers") as info:
        prune(ChannelShuffle(), PruneConfig(ratio=0.5), EXAMPLE, progress=False)
    assert isinstance(info.value, ValueError) and "\n" not in str(info.value)


def test_ignoring_the_named_layer_makes_it_prunable():
    model = ChannelShuffle()
    prune(model, PruneConfig(ratio=0.5, ignored_layers=("first",)), EXAMPLE, progress=False)
    assert model(EXAMPLE).shape == (1, 3) and model.second.out_channels == 4


def test_find_head_names_the_classifier():
    assert find_head(tiny_cnn(), (EXAMPLE,)) == ["6"]


# ------------------------------------------------------------------ unstructured


def test_unstructured_prune_reaches_the_sparsity_per_layer_and_removes_masks():
    model = tiny_cnn()
    record = prune(model, PruneConfig(method="unstructured", ratio=0.6, scope="layer"),
                   EXAMPLE, progress=False).record
    sparsity = record["layer_sparsity"]
    assert sparsity["0"] == pytest.approx(0.6, abs=0.04)
    assert sparsity["3"] == pytest.approx(0.6, abs=0.01)
    assert sparsity["6"] == 0.0  # the head is left dense
    names = [n for n, _ in model.named_parameters()] + list(dict(model.named_buffers()))
    assert not [n for n in names if n.endswith(("_orig", "_mask"))]
    assert record["zip_bytes_after"] < record["zip_bytes_before"]
    assert "do not run faster" in record["note"]


def test_global_unstructured_prune_hits_the_overall_sparsity():
    model = tiny_cnn()
    prune(model, PruneConfig(method="unstructured", ratio=0.5, scope="global"), EXAMPLE,
          progress=False)
    weights = [model[0].weight, model[3].weight]
    zeros = sum(int((w == 0).sum()) for w in weights)
    assert zeros / sum(w.numel() for w in weights) == pytest.approx(0.5, abs=0.01)


def test_iterative_unstructured_prune_follows_the_cubic_schedule():
    model = tiny_cnn()
    record = prune(model, PruneConfig(method="unstructured", ratio=0.8, iterative_steps=4,
                                      finetune_epochs=4, lr=0.01), EXAMPLE, data=_data(),
                   progress=False).record
    assert record["schedule"] == pytest.approx(cubic_schedule(0.8, 4))
    assert record["layer_sparsity"]["3"] == pytest.approx(0.8, abs=0.01)


def test_cubic_schedule_values():
    # Zhu & Gupta: s_t = s_f (1 - (1 - t/n)^3); most pruning happens early.
    assert cubic_schedule(0.8, 4) == pytest.approx([0.8 * (1 - 0.75 ** 3), 0.8 * (1 - 0.5 ** 3),
                                                    0.8 * (1 - 0.25 ** 3), 0.8])
    assert cubic_schedule(0.5, 1) == [0.5]


def test_epochs_are_split_over_steps():
    assert epochs_per_step(5, 2) == [2, 3]
    assert epochs_per_step(0, 3) == [0, 0, 0]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("kwargs, message", [
    ({"ratio": 1.0}, r"prune.ratio=1.0 is outside \[0.0, 1.0\)"),
    ({"ratio": -0.1}, r"prune.ratio=-0.1 is outside"),
    ({"method": "magnitude"}, "prune.method='magnitude' is not valid; expected one of "
                              "'structured', 'unstructured'"),
    ({"method": "structure"}, "did you mean 'structured'"),
    ({"scope": "all"}, "prune.scope"),
    ({"iterative_steps": 0}, "prune.iterative_steps"),
    ({"round_to": -8}, "prune.round_to"),
    ({"kd_alpha": 2.0}, "prune.kd_alpha"),
])
def test_bad_config_is_one_line_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        PruneConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_an_unknown_ignored_layer_is_named():
    with pytest.raises(ValueError, match="no layer named 'conv9'"):
        prune(tiny_cnn(), PruneConfig(ignored_layers=("conv9",)), EXAMPLE, progress=False)


def test_config_round_trips_through_a_dict():
    config = PruneConfig(method="unstructured", ratio=0.3, ignored_layers=("0",))
    assert PruneConfig.from_dict(config.to_dict()) == config


# ------------------------------------------------------------------ transformers


def test_bert_loses_attention_heads_and_ffn_width_but_keeps_its_hidden_size():
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64)).eval()
    ids = torch.randint(0, 50, (1, 6))
    record = prune(model, PruneConfig(ratio=0.5, head_ratio=0.5), (ids,), progress=False).record
    assert record["attention_heads_before"] == [4, 4]
    assert record["attention_heads_after"] == [2, 2]
    layer = model.encoder.layer[0]
    assert layer.attention.self.query.out_features == 16  # 2 heads of 8
    assert layer.intermediate.dense.out_features == 32
    assert layer.output.dense.out_features == 32  # the hidden size is untouched
    assert model(input_ids=ids).last_hidden_state.shape == (1, 6, 32)
    assert record["params_after"] < record["params_before"]
