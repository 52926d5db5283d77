"""The fair baseline for distillation: the same student trained alone at equal compute.

"KD closes X% of the gap" only means something against a student that had the same chance:
the same architecture and initial weights, the same optimizer steps (same batch size, same
number of batches per epoch, same epochs), the same schedule and weight decay, its best epoch
picked on the same validation set, and its learning rate chosen from the same small grid.
The one difference left is the point of distillation: the alone-student learns from the
labelled set only (the unlabelled transfer set has no labels to give it), so each of its
epochs reshuffles the labelled set as many times as it takes to fill the KD student's epoch.

    gap closed = (KD student - alone student) / (teacher - alone student)
"""

from __future__ import annotations

import math

from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

from compress.distill import DistillConfig, training_set
from compress.kd import collect
from compress.trainer import TrainConfig, fit, selection_batches


def kd_batches_per_epoch(config: DistillConfig, data: dict) -> int:
    """How many optimizer steps one KD epoch takes: labelled plus transfer rows per batch."""
    inputs, _ = training_set(data, config)
    return math.ceil(len(inputs) / config.batch_size)


def equal_steps_loader(data: dict, batches: int, batch_size: int) -> DataLoader:
    """The labelled set, reshuffled as often as needed to give ``batches`` full batches an
    epoch (each pass is a fresh permutation, so every sample is seen equally often)."""
    inputs, labels = collect(data["train"])
    if inputs is None or len(inputs) == 0:
        raise ValueError("baseline: the training data is empty (0 samples)")
    dataset = TensorDataset(inputs, labels)
    sampler = RandomSampler(dataset, num_samples=batches * batch_size)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler)


def train_alone(student: nn.Module, config: DistillConfig, data: dict, lr: float | None = None,
                progress: bool = False) -> dict:
    """Train ``student`` (in place) on labels alone with the KD student's steps and recipe.

    Returns the trainer's history; ``lr`` replaces ``config.lr`` (for a learning-rate grid).
    """
    loader = equal_steps_loader(data, kd_batches_per_epoch(config, data), config.batch_size)
    train = TrainConfig(epochs=config.epochs, lr=lr or config.lr, seed=config.seed,
                        patience=config.patience, progress=progress)
    return fit(student, loader, train, eval_batches=selection_batches(data), desc="alone")


def gap_closed(teacher: float, alone: float, distilled: float) -> float:
    """Share of the teacher-student gap that distillation closed (nan without a gap)."""
    gap = teacher - alone
    return (distilled - alone) / gap if gap > 0 else float("nan")


def binomial_se(accuracy: float, samples: int) -> float:
    """Standard error of an accuracy measured on ``samples`` independent samples."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / samples)
