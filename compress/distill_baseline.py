"""The fair baseline for distillation: the same student trained alone at equal compute.

"KD closes X% of the gap" only means something against a student that had the same chance:
the same architecture and initial weights, the same optimizer steps (same batch size, same
number of batches per epoch, same epochs), the same schedule and weight decay, its best epoch
picked on the same validation set, and its learning rate chosen from the same small grid.
The one difference left is the point of distillation: the alone-student learns from the
labelled set only (the unlabelled transfer set has no labels to give it), so each of its
epochs reshuffles the labelled set as many times as it takes to fill the KD student's epoch.

    gap closed = (KD student - alone student) / (teacher - alone student)

The distill stage runs this check in the pipeline when ``baseline_lrs`` is set
(:func:`compare_with_alone`, one seed, its figures in the stage record and the report);
``benchmarks/distill_mnist1d.py`` repeats it over seeds for the spread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from compress.kd import collect, training_set
from compress.trainer import TrainConfig, accuracy, fit, selection_batches


def kd_batches_per_epoch(config, data: dict) -> int:
    """How many optimizer steps one KD epoch takes: labelled plus transfer rows per batch."""
    inputs, _ = training_set(data, config)
    return math.ceil(len(inputs) / config.batch_size)


def equal_steps_loader(data: dict, batches: int, batch_size: int) -> DataLoader:
    """The labelled set repeated to fill ``batches`` full batches an epoch, shuffled.

    The rows are repeated in the dataset itself (not drawn by a resampling sampler), so the
    trainer's one-order-for-any-number-of-processes sampler keeps every step; each sample is
    seen equally often, give or take one.
    """
    inputs, labels = collect(data["train"])
    if inputs is None or len(inputs) == 0:
        raise ValueError("baseline: the training data is empty (0 samples)")
    rows = batches * batch_size
    index = torch.arange(rows) % len(inputs)
    return DataLoader(TensorDataset(inputs[index], labels[index]), batch_size=batch_size,
                      shuffle=True)


def train_alone(student: nn.Module, config, data: dict, lr: float | None = None,
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


def compare_with_alone(new_student: Callable[[], nn.Module], config, data: dict,
                       teacher: nn.Module, distilled: nn.Module) -> dict:
    """Train the distilled student's twin alone, once per learning rate in
    ``config.baseline_lrs``; keep the one best on the validation set; compare on evaluation.

    ``new_student()`` must give the student's initial weights (the KD student's own start).
    Returns the record: accuracies, the gap closed, and the evaluation set's binomial
    standard error, so a reader sees whether the difference is outside the noise.
    """
    select, evaluation = selection_batches(data), data.get("evaluation")
    if select is None or evaluation is None:
        raise ValueError("distill.baseline_lrs needs labelled 'validation' (or 'evaluation') "
                         "and 'evaluation' sets from the data provider")
    started = time.perf_counter()
    tried, best = {}, None
    for lr in config.baseline_lrs:
        student = new_student()
        train_alone(student, config, data, lr=lr)
        tried[lr] = accuracy(student, select)
        if best is None or tried[lr] > tried[best[0]]:
            best = (lr, student)
    alone = accuracy(best[1], evaluation)
    kd, teacher_acc = accuracy(distilled, evaluation), accuracy(teacher, evaluation)
    samples = len(collect(evaluation)[1])
    return {"steps": kd_batches_per_epoch(config, data) * config.epochs,
            "validation_accuracy": {f"{lr:g}": round(a, 6) for lr, a in tried.items()},
            "alone_lr": best[0], "kd_lr": config.lr, "teacher_accuracy": teacher_acc,
            "alone_accuracy": alone, "kd_accuracy": kd,
            "gap_closed": _or_none(gap_closed(teacher_acc, alone, kd)),
            "evaluation_samples": samples, "binomial_se": binomial_se(alone, samples),
            "seconds": round(time.perf_counter() - started, 3)}


def _or_none(value: float) -> float | None:
    """JSON has no NaN: a gap that does not exist is written as null."""
    return None if math.isnan(value) else value
