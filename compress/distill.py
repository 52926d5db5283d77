"""Knowledge distillation: a small student learns from a trained teacher's soft targets.

The loss is Hinton et al. (2015)::

    loss = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

where ``s`` and ``t`` are student and teacher logits and ``T`` the temperature; the ``T^2``
keeps the soft term's gradients on the scale of the hard one.

Distillation learns most from a *transfer set*: inputs labelled only by the teacher's soft
targets, usually far more than the labelled set. The data provider may hand a ``"transfer"``
iterable of unlabelled input batches; ``transfer_samples`` of them join the labelled
training set (their hard label is -1, so only the soft term sees them). With
``augment="none"`` the teacher's logits are computed once; otherwise the inputs are
perturbed each step and the teacher is run on the perturbed batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from compress.stage import StageConfig, StageResult, check_choice, check_range
from compress.trainer import TrainConfig, accuracy, fit

AUGMENTATIONS = ("none", "noise", "shift")
NO_LABEL = -1


@dataclass
class DistillConfig(StageConfig):
    """Logit distillation settings; ``student`` is the recipe's ``{build, args}`` table."""

    kind = "distill"
    student: dict = field(default_factory=dict)
    temperature: float = 4.0
    alpha: float = 0.9
    epochs: int = 30
    lr: float = 1e-2
    batch_size: int = 128
    transfer_samples: int = 0        # unlabelled samples from the provider's "transfer" set
    augment: str = "none"
    seed: int = 0
    tolerance: float | None = None   # overrides the recipe's tolerance for this stage

    def __post_init__(self):
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature must be > 0, got {self.temperature}")
        check_range("distill", "alpha", self.alpha, 0.0, 1.0, high_inclusive=True)
        check_choice("distill", "augment", self.augment, AUGMENTATIONS)
        for name in ("epochs", "transfer_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"distill.{name} must be >= 0, got {getattr(self, name)}")
        if self.batch_size < 1:
            raise ValueError(f"distill.batch_size must be >= 1, got {self.batch_size}")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.'s loss; rows whose label is -1 only get the soft term."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits / temperature, dim=-1),
                    log_target=True, reduction="batchmean") * temperature ** 2
    labelled = labels != NO_LABEL
    if alpha >= 1.0 or not bool(labelled.any()):
        return alpha * soft
    hard = F.cross_entropy(student_logits[labelled], labels[labelled])
    return (1 - alpha) * hard + alpha * soft


def augment_inputs(inputs: torch.Tensor, how: str) -> torch.Tensor:
    """Perturb a batch: Gaussian noise (5% of its std) or a random circular shift."""
    if how == "noise":
        return inputs + 0.05 * inputs.std() * torch.randn_like(inputs)
    if how == "shift":
        return torch.roll(inputs, shifts=int(torch.randint(-3, 4, ()).item()), dims=-1)
    return inputs


def collect(batches, limit: int | None = None, labelled: bool = True):
    """Stack an iterable of batches into tensors (at most ``limit`` rows)."""
    xs, ys, rows = [], [], 0
    for batch in batches:
        inputs, labels = (batch if labelled else (batch[0] if isinstance(batch, (tuple, list))
                                                  else batch, None))
        xs.append(inputs)
        if labels is not None:
            ys.append(labels)
        rows += inputs.shape[0]
        if limit is not None and rows >= limit:
            break
    if not xs:
        return None, None
    x = torch.cat(xs)[:limit]
    return x, (torch.cat(ys)[:limit] if ys else None)


@torch.no_grad()
def _logits(model: nn.Module, inputs: torch.Tensor, batch: int = 1024) -> torch.Tensor:
    model.eval()
    return torch.cat([model(inputs[i:i + batch]) for i in range(0, len(inputs), batch)])


def check_compatible(teacher: nn.Module, student: nn.Module, sample: torch.Tensor) -> None:
    """Teacher and student must give logits of the same shape on the same input."""
    with torch.no_grad():
        t_shape = tuple(teacher.eval()(sample[:2]).shape)
        s_shape = tuple(student.eval()(sample[:2]).shape)
    if t_shape != s_shape:
        raise ValueError(f"teacher outputs shape {list(t_shape)} but the student outputs "
                         f"{list(s_shape)}; distillation needs the same output shape")


def distill(teacher: nn.Module, student: nn.Module, config: DistillConfig, data: dict,
            checkpoint=None, resume: bool = False, progress: bool = True) -> StageResult:
    """Train ``student`` (in place) on the teacher's soft targets; return it with a record.

    ``data``: ``{"train": (inputs, labels) batches, "evaluation": ..., "transfer":
    unlabelled input batches (optional)}``.
    """
    inputs, labels = collect(data["train"])
    if inputs is None or len(inputs) == 0:
        raise ValueError("distill: the training data is empty (0 samples)")
    check_compatible(teacher, student, inputs)
    if config.transfer_samples:
        if data.get("transfer") is None:
            raise ValueError("distill.transfer_samples > 0 but the data provider gives no "
                             "'transfer' set")
        extra, _ = collect(data["transfer"], config.transfer_samples, labelled=False)
        if extra is None:
            raise ValueError("distill: the transfer set is empty (0 samples)")
        inputs = torch.cat([inputs, extra])
        labels = torch.cat([labels, torch.full((len(extra),), NO_LABEL, dtype=labels.dtype)])
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    precomputed = config.augment == "none"
    targets = _logits(teacher, inputs) if precomputed else torch.zeros(len(inputs))
    loader = DataLoader(TensorDataset(inputs, targets, labels), batch_size=config.batch_size,
                        shuffle=True)

    def loss_fn(model, batch):
        batch_inputs, batch_targets, batch_labels = batch
        if not precomputed:
            batch_inputs = augment_inputs(batch_inputs, config.augment)
            with torch.no_grad():
                batch_targets = teacher(batch_inputs)
        logits = model(batch_inputs)
        return kd_loss(logits, batch_targets, batch_labels, config.temperature,
                       config.alpha), logits, batch_labels

    history = fit(student, loader,
                  TrainConfig(epochs=config.epochs, lr=config.lr, seed=config.seed,
                              progress=progress),
                  loss_fn=loss_fn, eval_batches=data.get("evaluation"), checkpoint=checkpoint,
                  resume=resume, desc="distill")
    record = {"temperature": config.temperature, "alpha": config.alpha,
              "labelled_samples": int((labels != NO_LABEL).sum()),
              "transfer_samples": int((labels == NO_LABEL).sum()),
              "best_epoch": history["best_epoch"], "epochs_run": len(history["history"])}
    if data.get("evaluation") is not None:
        record["teacher_accuracy"] = accuracy(teacher, data["evaluation"])
        record["student_accuracy"] = accuracy(student, data["evaluation"])
    return StageResult(artifact=student, record=record)
