"""Knowledge distillation: the loss formula, transfer data, and bad input."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.compress.distill import NO_LABEL, DistillConfig, distill, kd_loss


def _hand_kd(student, teacher, label, temperature, alpha):
    """Hinton et al.'s loss for one row, written out with plain Python floats."""
    def softmax(row, t):
        exps = [math.exp(v / t) for v in row]
        return [e / sum(exps) for e in exps]

    p_t, p_s = softmax(teacher, temperature), softmax(student, temperature)
    kl = sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    ce = -math.log(softmax(student, 1.0)[label]) if label != NO_LABEL else None
    soft = alpha * temperature ** 2 * kl
    return soft if ce is None else (1 - alpha) * ce + soft


def test_kd_loss_matches_a_hand_computation():
    student = [[1.0, -0.5, 2.0], [0.2, 0.1, -1.0]]
    teacher = [[2.0, 0.0, 1.0], [-0.3, 1.5, 0.4]]
    labels = [2, 1]
    temperature, alpha = 3.0, 0.7
    got = kd_loss(torch.tensor(student), torch.tensor(teacher), torch.tensor(labels),
                  temperature, alpha)
    hand_soft = sum(_hand_kd(s, t, NO_LABEL, temperature, alpha)
                    for s, t in zip(student, teacher)) / 2
    hand_hard = sum(-math.log(math.exp(s[y]) / sum(math.exp(v) for v in s))
                    for s, y in zip(student, labels)) / 2
    assert float(got) == pytest.approx((1 - alpha) * hand_hard + hand_soft, rel=1e-5)


def test_kd_loss_is_zero_when_the_student_copies_the_teacher_and_alpha_is_one():
    logits = torch.randn(4, 5)
    loss = kd_loss(logits, logits.clone(), torch.full((4,), NO_LABEL), 4.0, 1.0)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_rows_without_labels_only_get_the_soft_term():
    student, teacher = torch.randn(2, 4), torch.randn(2, 4)
    mixed = kd_loss(student, teacher, torch.tensor([1, NO_LABEL]), 2.0, 0.5)
    hand = (_hand_kd(student[0].tolist(), teacher[0].tolist(), NO_LABEL, 2.0, 0.5)
            + _hand_kd(student[1].tolist(), teacher[1].tolist(), NO_LABEL, 2.0, 0.5)) / 2
    hard = float(nn.functional.cross_entropy(student[:1], torch.tensor([1])))
    assert float(mixed) == pytest.approx(0.5 * hard + hand, rel=1e-5)


def test_alpha_zero_is_plain_cross_entropy():
    student, teacher, labels = torch.randn(3, 4), torch.randn(3, 4), torch.tensor([0, 3, 1])
    assert float(kd_loss(student, teacher, labels, 4.0, 0.0)) == pytest.approx(
        float(nn.functional.cross_entropy(student, labels)), rel=1e-6)


def _blobs(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[2.0, 0.0], [-2.0, 0.0], [0.0, 2.5]])
    y = torch.randint(0, 3, (n,), generator=g)
    x = centers[y] + 0.6 * torch.randn(n, 2, generator=g)
    return x, y


def _trained_teacher():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = _blobs()
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(x), y).backward()
        optimizer.step()
    return teacher.eval()


def _data(with_transfer=False):
    x, y = _blobs()
    xt, yt = _blobs(128, seed=1)
    data = {"train": DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
            "evaluation": DataLoader(TensorDataset(xt, yt), batch_size=64)}
    if with_transfer:
        data["transfer"] = [torch.randn(64, 2) * 2 for _ in range(4)]
    return data


def test_distill_teaches_a_student_without_labels_from_transfer_data():
    teacher = _trained_teacher()
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    config = DistillConfig(alpha=1.0, epochs=8, lr=0.05, transfer_samples=256)
    result = distill(teacher, student, config, _data(with_transfer=True), progress=False)
    record = result.artifact is student and result.record
    assert record["transfer_samples"] == 256
    assert record["labelled_samples"] == 256
    assert record["student_accuracy"] >= record["teacher_accuracy"] - 0.05
    assert record["student_accuracy"] > 0.85


def test_a_checkpointed_run_gives_the_same_student(tmp_path):
    teacher, data = _trained_teacher(), _data()
    config = DistillConfig(epochs=3, lr=0.05)
    torch.manual_seed(1)
    straight = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    distill(teacher, straight, config, data, progress=False)
    torch.manual_seed(1)
    resumed = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 3))
    checkpoint = tmp_path / "ckpt.pt"
    distill(teacher, resumed, DistillConfig(epochs=3, lr=0.05), data, checkpoint=checkpoint,
            progress=False)
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_teacher_and_student_output_shapes_must_match():
    student = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Linear(8, 4))
    with pytest.raises(ValueError, match=r"teacher outputs shape \[2, 3\] but the student "
                                         r"outputs \[2, 4\]"):
        distill(_trained_teacher(), student, DistillConfig(epochs=1), _data(), progress=False)


def test_empty_training_data_is_one_clear_error():
    data = {"train": DataLoader(TensorDataset(torch.zeros(0, 2), torch.zeros(0).long())),
            "evaluation": None}
    with pytest.raises(ValueError, match="training data is empty"):
        distill(_trained_teacher(), nn.Linear(2, 3), DistillConfig(epochs=1), data,
                progress=False)


def test_transfer_samples_without_a_transfer_set_is_an_error():
    with pytest.raises(ValueError, match="no 'transfer' set"):
        distill(_trained_teacher(), nn.Linear(2, 3), DistillConfig(epochs=1,
                transfer_samples=10), _data(), progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"temperature": 0.0}, "distill.temperature"),
    ({"alpha": 1.5}, "distill.alpha"),
    ({"augment": "nois"}, "did you mean 'noise'"),
    ({"epochs": -1}, "distill.epochs"),
    ({"batch_size": 0}, "distill.batch_size"),
])
def test_bad_config_is_one_line_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        DistillConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_config_round_trips_through_a_dict():
    config = DistillConfig(student={"build": "m:f", "args": {"width": 8}}, alpha=0.5)
    assert DistillConfig.from_dict(config.to_dict()) == config


# ------------------------------------------------------------------ feature (hint) distillation


def _conv_net(width):
    torch.manual_seed(width)
    return nn.Sequential(nn.Conv1d(1, width, 3, padding=1), nn.ReLU(),
                         nn.Conv1d(width, width, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(width * 8, 3))


def _signal_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 8, generator=g)
    y = (x.mean(-1).squeeze(1) > 0).long() + (x[:, 0, 0] > 1).long()
    return {"train": DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True),
            "evaluation": DataLoader(TensorDataset(x, y), batch_size=96)}


def test_hints_project_a_narrower_student_with_a_1x1_conv():
    from edgepack.compress.feature_hints import build_hints

    config = DistillConfig(feature_pairs=("2:2", "4:4"))
    hinted, student_tap, teacher_tap = build_hints(_conv_net(8), _conv_net(4), config,
                                                   torch.randn(2, 1, 8))
    try:
        conv = hinted.projections["2:2"]
        assert isinstance(conv, nn.Conv1d) and (conv.in_channels, conv.out_channels) == (4, 8)
        linear = hinted.projections["4:4"]  # flattened features: a linear map on the last axis
        assert isinstance(linear, nn.Linear) and (linear.in_features, linear.out_features) == (32, 64)
    finally:
        student_tap.close()
        teacher_tap.close()


def test_feature_distillation_trains_and_returns_the_bare_student():
    teacher, student = _conv_net(8), _conv_net(4)
    config = DistillConfig(feature_pairs=("2:2",), feature_loss="cosine+mse", epochs=3, lr=0.02)
    before = [p.detach().clone() for p in student.parameters()]
    result = distill(teacher, student, config, _signal_data(), progress=False)
    assert result.artifact is student
    assert result.record["feature_pairs"] == ["2:2"]
    assert not student._forward_hooks and not teacher[2]._forward_hooks  # hooks removed
    assert all(n.split(".")[0] in {"0", "2", "5"} for n, _ in student.named_parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


def test_feature_loss_values():
    from edgepack.compress.feature_hints import feature_loss

    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    assert float(feature_loss(a, b, "cosine")) == pytest.approx((1 + 0) / 2)
    assert float(feature_loss(a, b, "mse")) == pytest.approx(2 / 4)
    assert float(feature_loss(a, b, "cosine+mse")) == pytest.approx(1.0)


def test_a_mapped_layer_that_does_not_exist_is_named():
    config = DistillConfig(feature_pairs=("2:conv9",), epochs=1)
    with pytest.raises(ValueError, match="the teacher has no layer named 'conv9'"):
        distill(_conv_net(8), _conv_net(4), config, _signal_data(), progress=False)


def test_paired_layers_whose_lengths_differ_cannot_be_projected():
    config = DistillConfig(feature_pairs=("0:4",), epochs=1)  # (B, 4, 8) against (B, 64)
    with pytest.raises(ValueError, match="only the width"):
        distill(_conv_net(8), _conv_net(4), config, _signal_data(), progress=False)


@pytest.mark.parametrize("pairs", [("conv",), ("a:",), ("a:b:c",)])
def test_malformed_feature_pairs_are_rejected(pairs):
    with pytest.raises(ValueError, match="student_layer:teacher_layer"):
        DistillConfig(feature_pairs=pairs)


def test_patience_stops_distillation_early():
    config = DistillConfig(epochs=10, lr=1e-12, patience=1)
    result = distill(_trained_teacher(), nn.Linear(2, 3), config, _data(), progress=False)
    assert result.record["epochs_run"] == 2


# ------------------------------------------------------------------ student initialisation


def test_student_from_a_pruned_teacher_copy_is_smaller_and_leaves_the_teacher_alone():
    from edgepack.compress.distill import distill_config, make_student

    teacher = _conv_net(8)
    student = make_student(teacher, distill_config(student_init="pruned-teacher", init_ratio=0.5),
                           torch.randn(1, 1, 8))
    assert student[0].out_channels == 4 and teacher[0].out_channels == 8
    assert student[5].out_features == 3
    assert all(p.requires_grad for p in student.parameters())


def test_every_kth_layer_student_of_a_bert_model():
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertConfig, BertModel

    from edgepack.compress.distill import distill_config, make_student

    torch.manual_seed(0)
    teacher = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=4,
                                   num_attention_heads=2, intermediate_size=32)).eval()
    student = make_student(teacher, distill_config(student_init="every-kth-layer", keep_every=2),
                           None).eval()
    assert len(student.encoder.layer) == 2 and student.config.num_hidden_layers == 2
    assert torch.equal(student.encoder.layer[1].output.dense.weight,
                       teacher.encoder.layer[2].output.dense.weight)
    ids = torch.randint(0, 50, (1, 5))
    assert student(input_ids=ids).last_hidden_state.shape == (1, 5, 16)
    assert len(teacher.encoder.layer) == 4


def test_every_kth_layer_needs_a_layer_stack():
    from edgepack.compress.distill import distill_config, make_student

    with pytest.raises(ValueError, match="stack of repeated layers"):
        make_student(nn.Linear(2, 3), distill_config(student_init="every-kth-layer"), None)


def test_embedding_objective_learns_the_teachers_embeddings_without_labels():
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from edgepack.compress.distill import DistillConfig, distill, embedding_loss, mean_cosine

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(12, 64), nn.Tanh(), nn.Linear(64, 16))
    student = nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 16))
    inputs = torch.randn(2048, 12)
    data = {"train": DataLoader(TensorDataset(inputs), batch_size=64, shuffle=True),
            "evaluation": DataLoader(TensorDataset(torch.randn(256, 12)), batch_size=256)}
    before = mean_cosine(student, teacher, inputs[:256])
    result = distill(teacher, student, DistillConfig(objective="embedding", epochs=15, lr=1e-2),
                     data, progress=False)
    after = result.record["mean_cosine_to_teacher"]
    assert result.record["objective"] == "embedding"
    assert before < 0.5 < 0.95 < after
    same = torch.randn(4, 16)
    assert float(embedding_loss(same, same)) == pytest.approx(0.0, abs=1e-6)


def test_an_embedding_student_records_its_learning_curve_on_the_validation_rows():
    """Each epoch's cosine and Spearman on the validation rows are recorded and printed; the
    last is what the trained student measures there, and without a validation set there is
    no curve (nothing is scored on the evaluation rows that judge the stages)."""
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from edgepack.bench.embedding_quality import embedding_quality
    from edgepack.compress.distill import DistillConfig, distill

    def run(with_validation: bool):
        torch.manual_seed(0)
        teacher = nn.Sequential(nn.Linear(12, 64), nn.Tanh(), nn.Linear(64, 16))
        student = nn.Sequential(nn.Linear(12, 24), nn.Tanh(), nn.Linear(24, 16))
        data = {"train": DataLoader(TensorDataset(torch.randn(1024, 12)), batch_size=64,
                                    shuffle=True),
                "evaluation": DataLoader(TensorDataset(torch.randn(64, 12)), batch_size=64)}
        held_out = torch.randn(96, 12)
        if with_validation:
            data["validation"] = DataLoader(TensorDataset(held_out, torch.full((96,), -1)),
                                            batch_size=32)
        config = DistillConfig(objective="embedding", epochs=5, lr=1e-2)
        return distill(teacher, student, config, data, progress=False), teacher, held_out

    result, teacher, held_out = run(with_validation=True)
    curve = result.record["learning_curve"]
    assert [point["epoch"] for point in curve] == [1, 2, 3, 4, 5]
    assert curve[0]["validation_cosine"] < curve[-1]["validation_cosine"]
    assert curve[0]["validation_spearman"] < curve[-1]["validation_spearman"]
    assert result.record["best_epoch"] == 4      # one-cycle: the lowest loss comes last
    with torch.no_grad():
        found = embedding_quality(result.artifact(held_out).numpy(), teacher(held_out).numpy())
    assert curve[-1]["validation_cosine"] == pytest.approx(found["mean_cosine"], abs=1e-4)
    assert curve[-1]["validation_spearman"] == pytest.approx(found["spearman"], abs=1e-4)
    assert "learning_curve" not in run(with_validation=False)[0].record


def test_the_epoch_line_shows_what_was_monitored():
    from edgepack.compress.trainer import epoch_line

    line = epoch_line("distill 2/4", {"loss": 0.25, "train_accuracy": None, "samples_per_s": 90,
                                      "monitored": {"validation_cosine": 0.93125,
                                                    "validation_spearman": 0.9}})
    assert "validation cosine 0.9313" in line and "validation spearman 0.9000" in line
