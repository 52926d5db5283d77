"""The fair distillation baseline: same steps, labelled data only."""

import math
from collections import Counter

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from compress.distill import DistillConfig
from compress.distill_baseline import (binomial_se, equal_steps_loader, gap_closed,
                                       kd_batches_per_epoch, train_alone)
from edgepack.zoo import mnist1d_cnn


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


@pytest.mark.parametrize("teacher, alone, kd, closed", [
    (0.98, 0.96, 0.97, 0.5), (0.98, 0.96, 0.96, 0.0), (0.98, 0.96, 0.99, 1.5)])
def test_gap_closed(teacher, alone, kd, closed):
    assert gap_closed(teacher, alone, kd) == pytest.approx(closed)


def test_gap_closed_without_a_gap_is_not_a_number():
    assert math.isnan(gap_closed(0.95, 0.96, 0.97))


def test_binomial_standard_error():
    assert binomial_se(0.97, 10_000) == pytest.approx(math.sqrt(0.97 * 0.03 / 10_000))
