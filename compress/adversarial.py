"""Adversarial fine-tuning: train on PGD examples to resist them.

A defence for distillation and for pruning's fine-tuning, switched on by a recipe field::

    adversarial = { eps = 0.1, steps = 7, ratio = 0.5 }                   # Madry et al. 2018
    adversarial = { eps = 0.2, steps = 7, loss = "trades", beta = 1.0 }  # Zhang et al. 2019

Both craft examples with ``steps`` PGD steps inside an L-infinity ball of ``eps``
training-input standard deviations, against the model being trained, on the first ``ratio``
of every batch's rows. Neither needs labels, so transfer-set rows (teacher-labelled or not)
are attacked too: more inputs, even unlabelled, buy robustness (Carmon et al. 2019).

- ``loss = "madry"`` (default, ``ratio`` 0.5): the attacked rows replace the clean ones and
  the stage's own loss (distillation's soft targets, or fine-tuning's) is taken on the
  mixed batch; the examples maximise that loss. The clean rows keep clean accuracy.
- ``loss = "trades"`` (default ``ratio`` 1.0): the stage's loss on the clean batch, plus
  ``beta`` times KL(f(x) || f(x_adv)), with x_adv crafted to maximise that KL. The clean
  term is untouched, and the robust term asks only that answers not move inside the ball,
  which costs less clean accuracy than learning on attacked inputs.

The cost is time (``steps`` extra forward/backward passes per attacked row): the stage
record gives the seconds spent crafting and training, and the effect: clean and PGD
accuracy (at ``eps``) on the evaluation set after training.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from edgepack.bench.robustness.attacks.pgd import pgd
from edgepack.core.checks import (check_budget, check_choice, check_finite_fields, check_range,
                                  checked_fields)

EFFECT_SAMPLES = 512   # evaluation rows the record's PGD accuracy is measured on


LOSSES = ("madry", "trades")
DEFAULT_RATIO = {"madry": 0.5, "trades": 1.0}


@dataclass
class AdversarialConfig:
    """PGD budget (in training-input standard deviations), steps, attacked share of each
    batch (None: 0.5 for madry, 1.0 for trades), training loss, and TRADES' weight."""

    eps: float = 0.1
    steps: int = 7
    ratio: float | None = None
    loss: str = "madry"
    beta: float | None = None   # trades only (default 1.0)

    def __post_init__(self):
        check_finite_fields(self, "adversarial")
        if not self.eps > 0:
            raise ValueError(f"adversarial.eps must be > 0, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"adversarial.steps must be >= 1, got {self.steps}")
        check_budget("adversarial", "steps", self.steps, "steps")
        check_choice("adversarial", "loss", self.loss, LOSSES)
        self.ratio = float(DEFAULT_RATIO[self.loss] if self.ratio is None else self.ratio)
        check_range("adversarial", "ratio", self.ratio, 0.0, 1.0, high_inclusive=True)
        if self.loss != "trades" and self.beta is not None:
            raise ValueError(f"adversarial.beta weighs the TRADES term: it needs "
                             f"loss = 'trades', got loss = {self.loss!r}")
        if self.loss == "trades":
            self.beta = float(1.0 if self.beta is None else self.beta)
            if not self.beta > 0:
                raise ValueError(f"adversarial.beta must be > 0, got {self.beta}")


def adversarial_config(settings: dict, owner: str) -> AdversarialConfig | None:
    """The recipe's ``adversarial = {...}`` table checked; None when empty (the default)."""
    if not settings:
        return None
    return AdversarialConfig(**checked_fields(AdversarialConfig, settings, f"{owner}.adversarial"))


def trades_divergence(attacked_logits: torch.Tensor, clean_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) || softmax(attacked)), mean over rows: TRADES' robust term.

    Both sides as log-probabilities: a probability that underflows to 0 would give the
    KL an infinite (NaN) gradient through the clean side.
    """
    return F.kl_div(F.log_softmax(attacked_logits, dim=-1), F.log_softmax(clean_logits, dim=-1),
                    log_target=True, reduction="batchmean")


class AdversarialLoss:
    """A stage's loss function, with PGD examples crafted on the first ``ratio`` rows of
    every batch (Madry: in place of those rows; TRADES: in an added KL term).

    ``loss_fn(model, batch) -> (loss, logits, labels)`` with the inputs first in ``batch``;
    the other batch fields (labels, teacher logits) follow the rows they belong to.
    """

    def __init__(self, loss_fn, config: AdversarialConfig, scale: float):
        self.loss_fn, self.config, self.eps = loss_fn, config, config.eps * scale
        self.craft_seconds = 0.0
        self.crafted = 0

    def __call__(self, model, batch):
        inputs, *rest = batch
        rows = round(self.config.ratio * len(inputs))
        if not rows:
            return self.loss_fn(model, batch)
        if self.config.loss == "trades":
            return self._trades(model, batch, rows)
        head = [field[:rows] for field in rest]
        attacked = self._craft(model, inputs[:rows],
                               lambda m, x: self.loss_fn(m, (x, *head))[0])
        return self.loss_fn(model, (torch.cat([attacked, inputs[rows:]]), *rest))

    def _trades(self, model, batch, rows: int):
        """The stage's loss on the clean batch + beta * KL(f(x) || f(x_adv)) on ``rows``."""
        clean_inputs = batch[0][:rows]
        local = model.module if isinstance(model, DistributedDataParallel) else model
        was_training = local.training
        local.eval()   # the answers crafting moves away from, in the mode crafting runs in
        with torch.no_grad():
            reference = local(clean_inputs)
        local.train(was_training)
        attacked = self._craft(model, clean_inputs,
                               lambda m, x: trades_divergence(m(x), reference))
        loss, logits, labels = self.loss_fn(model, batch)
        clean, moved = model(torch.cat([clean_inputs, attacked])).split(rows)   # one pass
        return loss + self.config.beta * trades_divergence(moved, clean), logits, labels

    def _craft(self, model, inputs: torch.Tensor, objective) -> torch.Tensor:
        """PGD examples of ``inputs`` that maximise ``objective(model, x)``, timed."""
        started = time.perf_counter()
        # Craft on the plain module: under DistributedDataParallel a forward through the
        # wrapper would wait for a gradient all-reduce that crafting never makes.
        local = model.module if isinstance(model, DistributedDataParallel) else model
        attacked = pgd(local, inputs, None, self.eps, self.config.steps, seed=None,
                       loss_fn=objective)
        self.craft_seconds += time.perf_counter() - started
        self.crafted += len(inputs)
        return attacked


def with_defence(loss_fn, settings: dict, owner: str, train_inputs: torch.Tensor):
    """The loss wrapped for adversarial training (an :class:`AdversarialLoss`) when
    ``settings`` ask for it, else ``loss_fn`` itself. eps is scaled by the inputs' std."""
    config = adversarial_config(settings, owner)
    if config is None:
        return loss_fn
    return AdversarialLoss(loss_fn, config, float(train_inputs.float().std()) or 1.0)


def clean_target_columns(inputs: torch.Tensor, labels: torch.Tensor, teacher,
                         settings: dict) -> tuple:
    """The columns of a fine-tuning set with a teacher: ``(inputs, labels)``, or under
    adversarial fine-tuning ``(inputs, the teacher's outputs on the clean inputs, labels)``.

    The attacked copy of an input then learns the teacher's answer on the original
    (adversarially robust distillation, Goldblum et al. 2020). Asked on the attacked copy,
    the teacher, no more robust than the student, would teach its own mistakes, and the
    attack, which maximises the distance to it, would seek where the two disagree rather
    than where the student is wrong.
    """
    if teacher is None or not settings:
        return inputs, labels
    from edgepack.compress.kd import teacher_outputs

    return inputs, teacher_outputs(teacher, inputs), labels


def robust_accuracies(model, inputs, labels, eps: float) -> tuple[float, float]:
    """Clean accuracy and accuracy under PGD (10 steps, seed 0, absolute ``eps``), the
    inputs moved beside the model (a torchrun job trains on its GPU)."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    inputs, labels = inputs.to(device), labels.to(device)
    was_training = model.training
    model.eval()
    attacked = pgd(model, inputs, labels, eps, steps=10, seed=0)
    with torch.no_grad():
        clean = float((model(inputs).argmax(-1) == labels).float().mean())
        robust = float((model(attacked).argmax(-1) == labels).float().mean())
    model.train(was_training)
    return clean, robust


def epoch_score(loss_fn, selection) -> Callable | None:
    """Under adversarial training, what picks the best epoch: the mean of clean and PGD
    accuracy (at the defence's eps) on the first rows of the ``selection`` set (validation);
    None otherwise, and clean accuracy picks.

    Clean accuracy alone would pick the epoch that gave up the most robustness to get its
    last tenth of a point, undoing part of the defence (on the demo's prune stage: +8.8 PGD
    points at eps 0.1 instead of +9.4, docs/robustness.md).
    """
    if not isinstance(loss_fn, AdversarialLoss) or selection is None:
        return None
    from edgepack.compress.kd import collect

    inputs, labels = collect(selection, EFFECT_SAMPLES)
    if inputs is None or labels is None:
        return None
    return lambda model: sum(robust_accuracies(model, inputs, labels, loss_fn.eps)) / 2


def defence_record(tracker: AdversarialLoss, model, evaluation, train_seconds: float) -> dict:
    """The defence's cost (seconds) and effect (clean and PGD accuracy after training)."""
    from edgepack.compress.kd import collect

    record = {**asdict(tracker.config), "crafted_examples": tracker.crafted,
              "craft_seconds": round(tracker.craft_seconds, 3),
              "train_seconds": round(train_seconds, 3)}
    if evaluation is None:
        return record
    inputs, labels = collect(evaluation, EFFECT_SAMPLES)
    if inputs is None or labels is None:
        return record
    model.eval()
    record["clean_accuracy"], record["pgd_accuracy"] = robust_accuracies(
        model, inputs, labels, tracker.eps)
    record["pgd_eps"] = tracker.config.eps
    return record
