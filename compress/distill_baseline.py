"""The fair baseline for distillation: the same student trained alone at equal compute.

"KD closes X% of the gap" only means something against a student that had the same chance:
the same architecture and initial weights, the same optimizer steps (same batch size, same
number of batches per epoch, same epochs), the same schedule and weight decay, its best epoch
picked on the same validation set, and its learning rate chosen from the same small grid.
The one difference left is the point of distillation: the alone-student learns from the
labelled set only (the unlabelled transfer set has no labels to give it), so each of its
epochs reshuffles the labelled set as many times as it takes to fill the KD student's epoch.

    gap closed = (KD student - alone student) / (teacher - alone student)

Both sides of that ratio must have learned: an alone-student that diverged or ended near
chance would make any KD student look like it closed the whole gap. Such a learning rate is
recorded as failed and the next, 3x lower one is tried (three in all at least); when every
one fails the record says so and no gap is computed.

The distill stage runs this check in the pipeline when ``baseline_lrs`` is set
(:func:`compare_with_alone`, one seed, its figures in the stage record and the report);
``benchmarks/distill_mnist1d.py`` repeats it over seeds for the spread.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.bench.chance import chance_accuracy, near_chance
from edgepack.compress.kd import collect, training_set
from edgepack.compress.trainer import TrainConfig, accuracy, fit, selection_batches


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


BASELINE_GRID = 3      # learning rates tried at least, before the baseline is called failed
LR_STEP = 3.0          # each further learning rate is 3x lower than the last


def _train_one(new_student, config, data, lr, select, chance, samples):
    """One alone-student at ``lr``: (model, validation accuracy, why it failed or "")."""
    from edgepack.compress.trainer import TrainingDiverged

    student = new_student()
    try:
        train_alone(student, config, data, lr=lr)
    except TrainingDiverged as exc:
        return None, None, f"diverged ({str(exc).split(': ', 1)[-1].split(';')[0]})"
    score = accuracy(student, select)
    if not math.isfinite(score) or near_chance(score, chance, samples):
        return student, score, f"near chance ({score:.4f}, chance {chance:.4f})"
    return student, score, ""


def learning_rates(config) -> Iterator[float]:
    """``config.baseline_lrs`` in order, then lower ones (each ``LR_STEP`` times lower) until
    :data:`BASELINE_GRID` have been tried; the caller stops once one has trained."""
    tried = 0
    for lr in config.baseline_lrs:
        tried += 1
        yield lr
    lr = min(config.baseline_lrs)
    while tried < BASELINE_GRID:
        lr /= LR_STEP
        tried += 1
        yield float(f"{lr:.3g}")


def compare_with_alone(new_student: Callable[[], nn.Module], config, data: dict,
                       teacher: nn.Module, distilled: nn.Module) -> dict:
    """Train the distilled student's twin alone, once per learning rate in
    ``config.baseline_lrs``; keep the one best on the validation set; compare on evaluation.

    A twin that diverges or ends near chance is no baseline: when every listed learning rate
    fails so, lower ones are tried (3x lower each, :data:`BASELINE_GRID` in all), and if they
    fail too the record says the baseline failed (``alone_failed``) and gives no gap. A
    teacher or KD student near chance is named the same way (``failed_sides``): a ratio is
    only given when both sides of it learned.

    ``new_student()`` must give the student's initial weights (the KD student's own start).
    Returns the record: accuracies, the gap closed, and the evaluation set's binomial
    standard error, so a reader sees whether the difference is outside the noise.
    """
    select, evaluation = selection_batches(data), data.get("evaluation")
    if select is None or evaluation is None:
        raise ValueError("distill.baseline_lrs needs labelled 'validation' (or 'evaluation') "
                         "and 'evaluation' sets from the data provider")
    started = time.perf_counter()
    select_labels = collect(select)[1]
    chance, select_rows = chance_accuracy(select_labels), len(select_labels)
    tried, failed, best = {}, {}, None
    for lr in learning_rates(config):
        if best is not None and lr not in config.baseline_lrs:
            break   # the listed grid gave a baseline: lower rates are only a fallback
        student, score, why = _train_one(new_student, config, data, lr, select, chance,
                                         select_rows)
        if score is not None:
            tried[lr] = score
        if why:
            failed[f"{lr:g}"] = why
        elif best is None or score > tried[best[0]]:
            best = (lr, student)
    labels = collect(evaluation)[1]
    samples, eval_chance = len(labels), chance_accuracy(labels)
    kd, teacher_acc = accuracy(distilled, evaluation), accuracy(teacher, evaluation)
    alone = accuracy(best[1], evaluation) if best is not None else None
    sides = {"teacher": teacher_acc, "kd student": kd}
    failed_sides = [name for name, value in sides.items()
                    if near_chance(value, eval_chance, samples)]
    comparable = best is not None and "teacher" not in failed_sides
    return {"steps": kd_batches_per_epoch(config, data) * config.epochs,
            "validation_accuracy": {f"{lr:g}": round(a, 6) for lr, a in tried.items()},
            "failed_lrs": failed, "chance_accuracy": round(eval_chance, 6),
            "alone_failed": best is None,
            "failed_sides": failed_sides,
            "alone_lr": best[0] if best is not None else None, "kd_lr": config.lr,
            "teacher_accuracy": teacher_acc, "alone_accuracy": alone, "kd_accuracy": kd,
            "gap_closed": _or_none(gap_closed(teacher_acc, alone, kd)) if comparable else None,
            "evaluation_samples": samples,
            "binomial_se": binomial_se(alone if alone is not None else kd, samples),
            "seconds": round(time.perf_counter() - started, 3)}


def _or_none(value: float) -> float | None:
    """JSON has no NaN: a gap that does not exist is written as null."""
    return None if math.isnan(value) else value
