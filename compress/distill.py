"""Knowledge distillation: a small student learns from a trained teacher's soft targets.

The loss is Hinton et al. (2015)::

    loss = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

where ``s`` and ``t`` are student and teacher logits and ``T`` the temperature; the ``T^2``
keeps the soft term's gradients on the scale of the hard one.

Distillation learns most from a *transfer set*: inputs labelled only by the teacher's soft
targets, usually far more than the labelled set. The data provider may hand a ``"transfer"``
iterable of unlabelled input batches; ``transfer_samples`` of them join the labelled
training set (their hard label is -1, so only the soft term sees them). With
``augment="none"`` the teacher's logits are computed once (under torchrun: each process labels
its share of the rows and the shares are gathered); otherwise the inputs are perturbed each
step and the teacher is run on the perturbed batch.

For *embedding models* (``objective="embedding"``: the output is a pooled sentence or image
embedding, not class logits) there is no softmax to soften: the student learns the teacher's
embedding directly, with ``(1 - cosine) + MSE`` between the two (labels are not needed), and
is scored by its mean cosine similarity to the teacher. For token inputs,
``length_grouped`` batches sentences of similar length and cuts each batch's padding
(:mod:`edgepack.compress.token_batches`), and ``freeze`` keeps chosen parameters (a transformer's
word embeddings) fixed: both make CPU training cheaper without changing the objective.

*Feature (hint) distillation* (``feature_pairs``) adds a loss between paired layers' outputs:
:mod:`edgepack.compress.feature_hints`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from edgepack.core.checks import (check_budget, check_choice, check_finite_fields, check_range,
                                  checked_fields)
from edgepack.core.tensors import as_tuple, call, num_rows, rows
from edgepack.core.registry import field_names, settings_dict, split_settings
from edgepack.core.stage import StageConfig, StageInput, StageResult, StageSpec, register_stage
from edgepack.compress.student_inits import STUDENT_INITS
from edgepack.compress.adversarial import (AdversarialLoss, adversarial_config, defence_record,
                                           epoch_score, with_defence)
from edgepack.compress.embedding_curve import embedding_monitor
from edgepack.compress.feature_hints import build_hints, hint_loss
from edgepack.compress.kd import NO_LABEL, collect, freeze, kd_loss, training_set
from edgepack.compress.parallel import Distributed, moved_to
from edgepack.compress.target_cache import teacher_targets
from edgepack.compress.token_batches import length_grouped_loader
from edgepack.compress.trainer import TrainConfig, accuracy, fit, selection_batches

AUGMENTATIONS = ("none", "noise", "shift")
OBJECTIVES = ("logits", "embedding")
FEATURE_LOSSES = ("mse", "cosine", "cosine+mse")


@dataclass
class DistillConfig(StageConfig):
    """Logit distillation settings; ``student`` is the recipe's ``{build, args}`` table."""

    kind = "distill"
    version = 2  # 2: the student init's settings are its own (compress/student_inits/)
    student: dict = field(default_factory=dict)
    objective: str = "logits"        # "embedding": match the teacher's output embedding
    temperature: float = 4.0
    alpha: float = 0.9
    epochs: int = 30
    lr: float = 1e-2
    batch_size: int = 128
    transfer_samples: int = 0        # unlabelled samples from the provider's "transfer" set
    labelled: bool = True            # false: the transfer set alone (no sample of "train")
    augment: str = "none"
    feature_pairs: tuple[str, ...] = ()   # "student.layer:teacher.layer", matched by name
    feature_loss: str = "mse"
    feature_weight: float = 1.0
    patience: int = 0                # stop after this many epochs without improvement; 0: never
    student_init: str = "scratch"    # where the student starts (compress/student_inits/)
    init: Any = None                 # the init's own settings (None: its defaults)
    length_grouped: bool = False     # token inputs: batch similar lengths, cut the padding
    cache_targets: bool = False      # keep the teacher's outputs on disk for the next run
    freeze: tuple[str, ...] = ()     # parameter-name prefixes the student does not train
    seed: int = 0
    tolerance: float | None = None   # overrides the recipe's tolerance for this stage
    adversarial: dict = field(default_factory=dict)   # {eps, steps, ratio, loss, beta}: PGD
    baseline_lrs: tuple[float, ...] = ()  # also train the student alone at equal compute

    def __post_init__(self):
        check_finite_fields(self, "distill")
        if adversarial_config(self.adversarial, "distill") and self.objective != "logits":
            raise ValueError("distill.adversarial trains a classifier against attacks on its "
                             "labels; it needs objective='logits'")
        if self.temperature <= 0:
            raise ValueError(f"distill.temperature must be > 0, got {self.temperature}")
        check_range("distill", "alpha", self.alpha, 0.0, 1.0, high_inclusive=True)
        check_choice("distill", "augment", self.augment, AUGMENTATIONS)
        check_choice("distill", "objective", self.objective, OBJECTIVES)
        check_choice("distill", "feature_loss", self.feature_loss, FEATURE_LOSSES)
        for pair in self.feature_pairs:
            if pair.count(":") != 1 or not all(pair.split(":")):
                raise ValueError(f"distill.feature_pairs: {pair!r} must be "
                                 "'student_layer:teacher_layer'")
        self._check_init()
        if self.feature_weight < 0 or self.patience < 0:
            raise ValueError("distill.feature_weight and distill.patience must be >= 0")
        check_budget("distill", "epochs", self.epochs, "epochs")
        check_budget("distill", "transfer_samples", self.transfer_samples, "samples")
        if self.batch_size < 1:
            raise ValueError(f"distill.batch_size must be >= 1, got {self.batch_size}")
        if any(lr <= 0 for lr in self.baseline_lrs):
            raise ValueError(f"distill.baseline_lrs must be learning rates > 0, got "
                             f"{list(self.baseline_lrs)}")
        if not self.labelled and (not self.transfer_samples or self.baseline_lrs):
            raise ValueError("distill.labelled = false trains on the transfer set alone: set "
                             "transfer_samples > 0, and no baseline_lrs (that baseline trains "
                             "on the labelled set)")
        if self.baseline_lrs and self.objective != "logits":
            raise ValueError("distill.baseline_lrs compares accuracies: it needs "
                             "objective='logits'")

    def _check_init(self) -> None:
        """The init is a registered one, and ``init`` holds its settings."""
        spec = STUDENT_INITS.get(self.student_init, "distill")
        if self.init is None and spec.settings is not None:
            self.init = spec.settings()
        if spec.settings is not None and not isinstance(self.init, spec.settings):
            raise ValueError(f"distill: student_init {self.student_init!r} takes "
                             f"{spec.settings.__name__} settings, got {type(self.init).__name__}")

    def to_dict(self) -> dict:
        """Flat, as a recipe writes it: the init's settings beside the stage's own keys."""
        data = super().to_dict()
        data.pop("init")
        return {**data, **settings_dict(self.init)}

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "DistillConfig":
        owner = where or "distill"
        data = {k: v for k, v in data.items() if k != "kind"}
        init = data.get("student_init", cls.student_init)
        if not isinstance(init, str):
            raise ValueError(f"{owner}.student_init must be a string, got {init!r}")
        own = [name for name in field_names(cls) if name != "init"]
        mine, settings = split_settings(data, own, init, STUDENT_INITS, owner)
        return cls(init=settings, **checked_fields(cls, mine, owner))


def distill_config(**flat) -> DistillConfig:
    """A config from flat keyword arguments, as a recipe writes them:
    ``distill_config(student_init="teacher-layers", keep_layers=(0, 4, 5), epochs=3)``."""
    return DistillConfig.from_dict(flat)


def embedding_loss(student_embedding: torch.Tensor, teacher_embedding: torch.Tensor) -> torch.Tensor:
    """``(1 - cosine) + MSE`` between embeddings: direction and scale both matter."""
    cosine = F.cosine_similarity(student_embedding, teacher_embedding, dim=-1)
    return (1 - cosine).mean() + F.mse_loss(student_embedding, teacher_embedding)


@torch.no_grad()
def mean_cosine(student: nn.Module, teacher: nn.Module, inputs: torch.Tensor) -> float:
    """Mean cosine similarity of the student's embeddings to the teacher's."""
    student.eval()
    return float(F.cosine_similarity(_logits(student, inputs), _logits(teacher, inputs),
                                     dim=-1).mean())


def augment_inputs(inputs: torch.Tensor, how: str) -> torch.Tensor:
    """Perturb a batch: Gaussian noise (5% of its std) or a random circular shift."""
    if how == "noise":
        return inputs + 0.05 * inputs.std() * torch.randn_like(inputs)
    if how == "shift":
        return torch.roll(inputs, shifts=int(torch.randint(-3, 4, ()).item()), dims=-1)
    return inputs


@torch.no_grad()
def _logits(model: nn.Module, inputs, batch: int = 1024) -> torch.Tensor:
    """Outputs for every row; ``inputs`` is a tensor or a tuple (token ids and mask)."""
    model.eval()
    return torch.cat([call(model, rows(inputs, i, i + batch))
                      for i in range(0, num_rows(inputs), batch)])


def check_compatible(teacher: nn.Module, student: nn.Module, sample: torch.Tensor) -> None:
    """Teacher and student must give logits of the same shape on the same input."""
    with torch.no_grad():
        t_shape = tuple(call(teacher.eval(), rows(sample, 0, 2)).shape)
        s_shape = tuple(call(student.eval(), rows(sample, 0, 2)).shape)
    if t_shape != s_shape:
        raise ValueError(f"teacher outputs shape {list(t_shape)} but the student outputs "
                         f"{list(s_shape)}; distillation needs the same output shape")


def make_student(teacher: nn.Module, config: DistillConfig, example_inputs,
                 built: nn.Module | None = None) -> nn.Module:
    """The student to train, as its init makes it: ``built`` (from the recipe's builder) or
    cut from the teacher (:mod:`edgepack.compress.student_inits`)."""
    spec = STUDENT_INITS.get(config.student_init)
    return spec.make(teacher, config.init, example_inputs, built)


def distill(teacher: nn.Module, student: nn.Module, config: DistillConfig, data: dict,
            checkpoint=None, resume: bool = False, progress: bool = True) -> StageResult:
    """Train ``student`` (in place) on the teacher's soft targets; return it with a record.

    ``data``: ``{"train": (inputs, labels) batches, "evaluation": ..., "transfer":
    unlabelled input batches (optional)}``.
    """
    inputs, labels = training_set(data, config)
    check_compatible(teacher, student, inputs)
    frozen = freeze(student, config.freeze)
    for p in teacher.parameters():
        p.requires_grad_(False)
    teacher.eval()
    trained, taps = student, ()
    if config.feature_pairs:
        trained, *taps = build_hints(teacher, student, config, inputs)
    # Teacher logits are computed once unless each step needs fresh teacher outputs.
    precomputed = config.augment == "none" and not config.feature_pairs
    targets, targets_from = teacher_targets(teacher, inputs, precomputed, config.length_grouped,
                                            config.cache_targets)
    if config.length_grouped:  # token inputs (compress/token_batches.py)
        loader = length_grouped_loader(inputs, targets, labels, batch_size=config.batch_size)
    else:
        loader = DataLoader(TensorDataset(*as_tuple(inputs), targets, labels),
                            batch_size=config.batch_size, shuffle=True)

    def loss_fn(model, batch):
        *batch_inputs, batch_targets, batch_labels = batch  # several inputs: token models
        if not precomputed:
            batch_inputs = [augment_inputs(batch_inputs[0], config.augment)] + batch_inputs[1:]
            with torch.no_grad():
                batch_targets = teacher(*batch_inputs)
        logits = model(*batch_inputs)
        if config.objective == "embedding":
            loss = embedding_loss(logits, batch_targets)
        else:
            loss = kd_loss(logits, batch_targets, batch_labels, config.temperature, config.alpha)
        if taps:
            loss = loss + hint_loss(model, *taps, config)
        return loss, logits, batch_labels

    loss_fn = with_defence(loss_fn, config.adversarial, "distill", inputs)
    started = time.perf_counter()
    try:
        with moved_to(teacher, Distributed().device):  # beside the student (GPU jobs)
            history = fit(trained, loader,
                          TrainConfig(epochs=config.epochs, lr=config.lr, seed=config.seed,
                                      patience=config.patience, progress=progress),
                          loss_fn=loss_fn, eval_batches=_eval_batches(data, config),
                          checkpoint=checkpoint, resume=resume, desc="distill",
                          select=epoch_score(loss_fn, _eval_batches(data, config)),
                          monitor=embedding_monitor(teacher, data.get("validation"))
                          if config.objective == "embedding" else None)
    finally:
        for tap in taps:
            tap.close()
    record = {"temperature": config.temperature, "alpha": config.alpha,
              "labelled_samples": int((labels != NO_LABEL).sum()),
              "transfer_samples": int((labels == NO_LABEL).sum()),
              "feature_pairs": list(config.feature_pairs), "frozen_params": frozen,
              "best_epoch": history["best_epoch"], "epochs_run": len(history["history"]),
              "samples_per_s": [round(h["samples_per_s"]) for h in history["history"]],
              "train_seconds": round(time.perf_counter() - started, 3),
              "teacher_targets": targets_from}
    curve = [{"epoch": h["epoch"] + 1, "loss": round(h["loss"], 6),
              **{k: round(v, 4) for k, v in h["monitored"].items()}}
             for h in history["history"] if h.get("monitored")]
    if curve:      # the embedding student's quality on the validation rows, epoch by epoch
        record["learning_curve"] = curve
    if isinstance(loss_fn, AdversarialLoss):
        record["adversarial"] = defence_record(loss_fn, student, data.get("evaluation"),
                                               record["train_seconds"])
    record["objective"] = config.objective
    if config.objective == "embedding":
        held_out, _ = collect(data.get("evaluation") or [], labelled=False)
        record["mean_cosine_to_teacher"] = mean_cosine(
            student, teacher, held_out if held_out is not None else rows(inputs, 0, 1024))
    elif data.get("evaluation") is not None:
        record["teacher_accuracy"] = accuracy(teacher, data["evaluation"])
        record["student_accuracy"] = accuracy(student, data["evaluation"])
    return StageResult(artifact=student.eval(), record=record)


def _eval_batches(data: dict, config: DistillConfig):
    """Batches for per-epoch evaluation: accuracy needs labels, so embeddings go without
    (the best epoch is then the one with the lowest training loss)."""
    return selection_batches(data) if config.objective == "logits" else None


# --------------------------------------------------------------------------- as a pipeline stage


def _student_for(config: DistillConfig, given: StageInput) -> nn.Module:
    """The untrained student: built from the recipe's builder, or reduced from the teacher."""
    built = None
    if STUDENT_INITS.get(config.student_init).needs_builder:
        torch.manual_seed(config.seed)  # the same initial weights on a re-run or a rebuild
        built = given.build(config.student["build"], dict(config.student.get("args", {})))
    return make_student(given.artifact, config, given.example_inputs, built)


def _run_stage(config: DistillConfig, given: StageInput) -> StageResult:
    student = _student_for(config, given)
    result = distill(given.artifact, student, config, given.data, checkpoint=given.checkpoint,
                     resume=given.resume, progress=given.progress)
    if config.baseline_lrs:  # is distillation worth it? The same student alone, same steps
        from edgepack.compress.distill_baseline import compare_with_alone

        result.record["alone_baseline"] = compare_with_alone(
            lambda: _student_for(config, given), config, given.data, given.artifact, student)
    return result


def _rebuild(config: DistillConfig, given: StageInput, weights) -> nn.Module:
    from edgepack.export.weights import load_weights

    return load_weights(_student_for(config, given), weights).eval()


def _preflight(config: DistillConfig, data: dict, resolve) -> None:
    """What would fail mid-run, checked before the run folder is made."""
    if config.transfer_samples and data.get("transfer") is None:
        raise ValueError(f"distill: transfer_samples = {config.transfer_samples} but the data "
                         "provider gives no 'transfer' set")
    if STUDENT_INITS.get(config.student_init).needs_builder:
        if not config.student.get("build"):
            raise ValueError("distill: student must name a builder: "
                             "{ build = 'module:function', args = { ... } }")
        resolve(config.student["build"])


register_stage(StageSpec("distill", DistillConfig, consumes="torch", produces="torch",
                         run=_run_stage, rebuild=_rebuild, preflight=_preflight))
