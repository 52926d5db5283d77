"""The fair distillation baseline: same steps, labelled data only."""

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from edgepack.compress.distill import DistillConfig
from edgepack.bench.chance import chance_accuracy, near_chance
from edgepack.compress.distill_baseline import (binomial_se, compare_with_alone, equal_steps_loader,
                                                gap_closed, kd_batches_per_epoch, learning_rates,
                                                train_alone)
from edgepack.compress.trainer import TrainingDiverged
from edgepack.pipeline.run_report import baseline_line
from edgepack.compress.parallel import Distributed
from edgepack.zoo.mnist1d_models import mnist1d_cnn


def _data(labelled=96, transfer=160):
    torch.manual_seed(0)
    x, y = torch.randn(labelled, 1, 40), torch.randint(0, 10, (labelled,))
    return {"train": DataLoader(TensorDataset(x, y), batch_size=32),
            "transfer": [torch.randn(transfer, 1, 40)],
            "validation": DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32)}


def test_the_alone_student_gets_the_kd_students_batches_and_sees_every_sample_equally():
    data = _data()
    config = DistillConfig(transfer_samples=160, batch_size=32)
    batches = kd_batches_per_epoch(config, data)
    assert batches == math.ceil((96 + 160) / 32) == 8
    loader = equal_steps_loader(data, batches, config.batch_size)
    seen = Counter()
    rows = 0
    for inputs, _ in loader:
        rows += len(inputs)
        seen.update(tuple(row.flatten().tolist()) for row in inputs)
    assert len(loader) == batches and rows == batches * 32
    assert set(seen.values()) <= {2, 3}    # 256 rows over 96 samples: each 2 or 3 times
    assert len(seen) == 96                  # only labelled samples, no transfer rows


def test_train_alone_takes_the_same_number_of_epochs_and_uses_the_grid_lr():
    data = _data()
    config = DistillConfig(transfer_samples=160, batch_size=32, epochs=2)
    history = train_alone(mnist1d_cnn(width=4), config, data, lr=0.003)
    assert len(history["history"]) == 2 and history["best_metric"] is not None


def _count_training_steps(model):
    """Forward passes in training mode: one per optimizer step."""
    steps = []
    model.register_forward_hook(lambda m, i, o: steps.append(1) if m.training else None)
    return steps


def test_the_trainer_really_takes_every_step_the_baseline_asks_for():
    """The trainer once re-sharded any shuffled loader over its dataset, silently dropping
    the baseline's extra passes: the alone-student took a third of the KD student's steps."""
    data = _data()
    config = DistillConfig(transfer_samples=160, batch_size=32, epochs=2)
    student = mnist1d_cnn(width=4)
    steps = _count_training_steps(student)
    train_alone(student, config, data, lr=0.003)
    assert len(steps) == 2 * kd_batches_per_epoch(config, data) == 16


def test_a_resampling_loader_is_kept_as_asked_when_training_alone():
    dataset = TensorDataset(torch.randn(10, 1, 40), torch.zeros(10, dtype=torch.long))
    sampler = torch.utils.data.RandomSampler(dataset, num_samples=30)
    loader = DataLoader(dataset, batch_size=5, sampler=sampler)
    kept, extra = Distributed(enabled=False).shard(loader, seed=0)
    assert kept is loader and extra is None and len(kept) == 6


def test_the_stage_compares_kd_with_the_student_alone_and_picks_its_lr_on_validation(
        monkeypatch):
    monkeypatch.setattr("edgepack.compress.distill_baseline.near_chance", lambda *args: False)
    data = _data()   # random labels: this test is about picking the lr, not about learning
    data["evaluation"] = data["validation"]
    config = DistillConfig(transfer_samples=160, batch_size=32, epochs=1,
                           baseline_lrs=(0.001, 0.01))
    made = []

    def new_student():
        torch.manual_seed(3)
        made.append(mnist1d_cnn(width=4))
        return made[-1]

    teacher, distilled = mnist1d_cnn(width=8), mnist1d_cnn(width=4)
    record = compare_with_alone(new_student, config, data, teacher, distilled)
    assert len(made) == 2 and record["alone_lr"] in (0.001, 0.01)
    assert set(record["validation_accuracy"]) == {"0.001", "0.01"}
    assert record["steps"] == 8 and record["evaluation_samples"] == 32
    expected = gap_closed(record["teacher_accuracy"], record["alone_accuracy"],
                          record["kd_accuracy"])
    assert record["gap_closed"] == (None if math.isnan(expected) else pytest.approx(expected))
    assert record["binomial_se"] == pytest.approx(binomial_se(record["alone_accuracy"], 32))


def test_baseline_lrs_are_checked():
    with pytest.raises(ValueError, match="baseline_lrs must be learning rates > 0"):
        DistillConfig(baseline_lrs=(0.01, 0.0))
    with pytest.raises(ValueError, match="needs objective='logits'"):
        DistillConfig(baseline_lrs=(0.01,), objective="embedding")


@pytest.mark.parametrize("teacher, alone, kd, closed", [
    (0.98, 0.96, 0.97, 0.5), (0.98, 0.96, 0.96, 0.0), (0.98, 0.96, 0.99, 1.5)])
def test_gap_closed(teacher, alone, kd, closed):
    assert gap_closed(teacher, alone, kd) == pytest.approx(closed)


def test_gap_closed_without_a_gap_is_not_a_number():
    assert math.isnan(gap_closed(0.95, 0.96, 0.97))


def test_binomial_standard_error():
    assert binomial_se(0.97, 10_000) == pytest.approx(math.sqrt(0.97 * 0.03 / 10_000))


# ---------------------------------------------------------------- a baseline that failed


def test_chance_is_the_majority_class_and_near_chance_allows_the_noise():
    assert chance_accuracy(torch.tensor([0, 0, 0, 1])) == 0.75
    assert near_chance(0.0980, 0.1, 2000)            # the diverged demo student
    assert near_chance(0.12, 0.1, 2000) and not near_chance(0.2, 0.1, 2000)
    assert not near_chance(0.9735, 0.1, 2000)


def test_the_grid_goes_down_3x_until_three_were_tried():
    assert list(learning_rates(DistillConfig(baseline_lrs=(0.05,)))) == [0.05, 0.0167, 0.00556]
    assert list(learning_rates(DistillConfig(baseline_lrs=(0.01, 0.03, 0.1)))) == [
        0.01, 0.03, 0.1]


def _diverging_at(monkeypatch, bad_lrs):
    """train_alone raises TrainingDiverged at ``bad_lrs``; elsewhere it trains (a stub that
    leaves the weights, scored by a stubbed validation accuracy)."""
    tried = []

    def fake_train(student, config, data, lr=None, progress=False):
        tried.append(lr)
        if lr in bad_lrs:
            raise TrainingDiverged("alone 1/1: the loss became nan; lower the learning rate")
        student.trained_at = lr
        return {"history": []}

    def fake_accuracy(model, batches):
        return 0.9 if getattr(model, "trained_at", None) else 0.95

    monkeypatch.setattr("edgepack.compress.distill_baseline.train_alone", fake_train)
    monkeypatch.setattr("edgepack.compress.distill_baseline.accuracy", fake_accuracy)
    return tried


def _compare(lrs=(0.05,)):
    data = _data()
    data["evaluation"] = data["validation"]
    config = DistillConfig(transfer_samples=160, batch_size=32, epochs=1, baseline_lrs=lrs)
    return compare_with_alone(lambda: mnist1d_cnn(width=4), config, data,
                              mnist1d_cnn(width=8), mnist1d_cnn(width=4))


def test_a_diverged_baseline_is_retried_3x_lower(monkeypatch):
    tried = _diverging_at(monkeypatch, {0.05})
    record = _compare()
    assert tried == [0.05, 0.0167] and record["alone_lr"] == 0.0167
    assert record["failed_lrs"] == {"0.05": "diverged (the loss became nan)"}
    assert not record["alone_failed"] and record["gap_closed"] is not None
    line = baseline_line({"name": "01-distill", "record": {"alone_baseline": record}})
    assert "its lr 0.0167" in line and "failed first: lr 0.05: diverged" in line


def test_a_baseline_that_fails_at_every_lr_gives_no_ratio(monkeypatch):
    tried = _diverging_at(monkeypatch, {0.05, 0.0167, 0.00556})
    record = _compare()
    assert tried == [0.05, 0.0167, 0.00556]
    assert record["alone_failed"] and record["alone_accuracy"] is None
    assert record["gap_closed"] is None and set(record["failed_lrs"]) == {"0.05", "0.0167",
                                                                          "0.00556"}
    line = baseline_line({"name": "01-distill", "record": {"alone_baseline": record}})
    assert "no fair baseline" in line and "% of the gap" not in line


def test_a_student_near_chance_is_a_failed_baseline(monkeypatch):
    """The review's case: the student alone ended at 0.098 (10 classes) and the report said
    '99% of the gap closed'."""
    monkeypatch.setattr("edgepack.compress.distill_baseline.train_alone",
                        lambda student, config, data, lr=None, progress=False: {})
    record = _compare()   # untrained students on random labels: near chance at every lr
    assert record["alone_failed"] and record["gap_closed"] is None
    assert all(why.startswith("near chance") for why in record["failed_lrs"].values())


def test_a_teacher_near_chance_is_said_in_the_report_and_voids_the_ratio(monkeypatch):
    from edgepack.pipeline.measure import chance_check
    from edgepack.pipeline.run_report import teacher_warning

    labels = torch.arange(2000) % 10
    assert chance_check(0.105, labels) == {"chance_accuracy": 0.1, "near_chance": True}
    assert "near chance" in teacher_warning({"accuracy": 0.105, **chance_check(0.105, labels)})
    assert teacher_warning({"accuracy": 0.97, **chance_check(0.97, labels)}) == ""
    record = {"kd_accuracy": 0.2, "alone_accuracy": 0.15, "teacher_accuracy": 0.11,
              "gap_closed": None, "failed_sides": ["teacher"], "alone_failed": False,
              "steps": 8, "alone_lr": 0.05, "validation_accuracy": {"0.05": 0.15},
              "binomial_se": 0.01, "evaluation_samples": 2000}
    line = baseline_line({"name": "01-distill", "record": {"alone_baseline": record}})
    assert "the teacher is near chance" in line and "% of the gap" not in line
