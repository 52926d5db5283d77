"""Adversarial fine-tuning (Madry et al. 2018): train on PGD examples to resist them.

A defence for distillation and for pruning's fine-tuning, switched on by a recipe field::

    adversarial = { eps = 0.1, steps = 7, ratio = 0.5 }

In every training batch the first ``ratio`` of the rows are replaced by PGD examples
crafted against the model being trained, with ``steps`` steps inside an L-infinity ball of
``eps`` training-input standard deviations. The examples maximise the stage's own loss
(distillation's soft-target loss, or fine-tuning's), so labels are not needed: transfer-set
rows are attacked too. The rest of the batch stays clean, which keeps clean accuracy.

The cost is time (``steps`` extra forward/backward passes per attacked row): the stage
record gives the seconds spent crafting and training, and the effect: clean and PGD
accuracy (at ``eps``) on the evaluation set after training.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from bench.robustness.whitebox import pgd
from core.checks import check_range, checked_fields

EFFECT_SAMPLES = 512   # evaluation rows the record's PGD accuracy is measured on


@dataclass
class AdversarialConfig:
    """PGD budget (in training-input standard deviations), steps, and attacked share."""

    eps: float = 0.1
    steps: int = 7
    ratio: float = 0.5

    def __post_init__(self):
        if not self.eps > 0:
            raise ValueError(f"adversarial.eps must be > 0, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"adversarial.steps must be >= 1, got {self.steps}")
        check_range("adversarial", "ratio", self.ratio, 0.0, 1.0, high_inclusive=True)


def adversarial_config(settings: dict, owner: str) -> AdversarialConfig | None:
    """The recipe's ``adversarial = {...}`` table checked; None when empty (the default)."""
    if not settings:
        return None
    return AdversarialConfig(**checked_fields(AdversarialConfig, settings, f"{owner}.adversarial"))


class AdversarialLoss:
    """A stage's loss function, on batches whose first ``ratio`` rows are PGD examples.

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
        if rows:
            started = time.perf_counter()
            head = [field[:rows] for field in rest]

            def objective(m, x):
                return self.loss_fn(m, (x, *head))[0]

            # Craft on the plain module: under DistributedDataParallel a forward through the
            # wrapper would wait for a gradient all-reduce that crafting never makes.
            local = model.module if isinstance(model, DistributedDataParallel) else model
            attacked = pgd(local, inputs[:rows], None, self.eps, self.config.steps, seed=None,
                           loss_fn=objective)
            inputs = torch.cat([attacked, inputs[rows:]])
            self.craft_seconds += time.perf_counter() - started
            self.crafted += rows
        return self.loss_fn(model, (inputs, *rest))


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
    from compress.kd import teacher_outputs

    return inputs, teacher_outputs(teacher, inputs), labels


def defence_record(tracker: AdversarialLoss, model, evaluation, train_seconds: float) -> dict:
    """The defence's cost (seconds) and effect (clean and PGD accuracy after training)."""
    from compress.kd import collect

    record = {**asdict(tracker.config), "crafted_examples": tracker.crafted,
              "craft_seconds": round(tracker.craft_seconds, 3),
              "train_seconds": round(train_seconds, 3)}
    if evaluation is None:
        return record
    inputs, labels = collect(evaluation, EFFECT_SAMPLES)
    if inputs is None or labels is None:
        return record
    model.eval()
    attacked = pgd(model, inputs, labels, tracker.eps, steps=10, seed=0)
    with torch.no_grad():
        record["clean_accuracy"] = float((model(inputs).argmax(-1) == labels).float().mean())
        record["pgd_accuracy"] = float((model(attacked).argmax(-1) == labels).float().mean())
    record["pgd_eps"] = tracker.config.eps
    return record
