"""A differentially private teacher: DP-SGD through opacus, with the (epsilon, delta) it spent.

DP-SGD (Abadi et al. 2016) clips each sample's gradient to ``max_grad_norm`` and adds
Gaussian noise to each batch's sum; batches are Poisson samples of the training set, and
opacus's accountant (PRV, Gopi et al. 2021) turns the noise, the sampling rate and the
number of steps into the epsilon spent at the chosen delta. ``train_private`` asks opacus
for the noise that spends exactly the target epsilon over the whole schedule, trains, and
returns what the accountant says was spent.

What the guarantee covers: the samples of the training set handed in here, and nothing
else. A model computed from this one and from data independent of that set (a student
distilled on a public transfer set, its int8 file calibrated on public inputs) keeps the
same (epsilon, delta) by post-processing; one trained on those samples again does not.
The pipeline checks which case holds (:mod:`edgepack.pipeline.private_recipe`).
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.core.checks import check_finite_fields
from edgepack.core.errors import BadInput, MissingDependency

AUGMENTATIONS_DP = ("none", "shift")   # "noise" scales by the batch's std: it mixes samples


@dataclass
class DPConfig:
    """The ``dp`` table of a recipe's ``[model]``: the target guarantee and DP-SGD settings."""

    epsilon: float = 8.0
    delta: float = 1e-5
    max_grad_norm: float = 1.0        # each sample's gradient is clipped to this L2 norm
    batch_size: int = 1024            # expected Poisson batch: larger batches, less noise
    momentum: float = 0.9             # SGD momentum (DP-SGD's usual optimizer)

    def __post_init__(self):
        check_finite_fields(self, "[model.dp]")
        if not 0 < self.epsilon <= 100:
            raise ValueError(f"[model.dp] epsilon must be in (0, 100], got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"[model.dp] delta must be in (0, 1), got {self.delta}")
        if self.max_grad_norm <= 0:
            raise ValueError(f"[model.dp] max_grad_norm must be > 0, got {self.max_grad_norm}")
        if self.batch_size < 1:
            raise ValueError(f"[model.dp] batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"[model.dp] momentum must be in [0, 1), got {self.momentum}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _opacus():
    try:
        import opacus
        from opacus.validators import ModuleValidator
    except ImportError as exc:
        raise MissingDependency("opacus", "privacy", exc) from exc
    return opacus, ModuleValidator


def check_private_model(model: nn.Module) -> None:
    """DP-SGD needs per-sample gradients: layers that mix samples (BatchNorm) are refused."""
    _, validator = _opacus()
    problems = validator.validate(model, strict=False)
    if problems:
        raise BadInput(f"[model.dp]: this model cannot be trained with DP-SGD: "
                       f"{str(problems[0]).splitlines()[0]} (replace BatchNorm with GroupNorm)")


def _dataset(batches: Iterable) -> TensorDataset:
    xs, ys = [], []
    for inputs, labels in batches:
        xs.append(inputs)
        ys.append(labels)
    return TensorDataset(torch.cat(xs), torch.cat(ys))


def train_private(model: nn.Module, train_batches: Iterable, epochs: int, lr: float,
                  config: DPConfig, augment=None, log=print) -> dict:
    """Train ``model`` in place with DP-SGD for ``epochs``; return the privacy record.

    ``augment``: a function perturbing each batch's inputs, independently of their values
    (a random shift, say), or None.
    """
    opacus, _ = _opacus()
    check_private_model(model)
    dataset = _dataset(train_batches)
    samples = len(dataset)
    if config.delta >= 1.0 / samples:
        raise BadInput(f"[model.dp] delta = {config.delta:g} is not below 1/N = "
                       f"{1.0 / samples:.3g} for the N = {samples} private samples; a delta that "
                       "large allows leaking a whole sample: lower it")
    loader = DataLoader(dataset, batch_size=min(config.batch_size, samples), shuffle=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=config.momentum)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # opacus's notes on secure RNG (recorded below)
        engine = opacus.PrivacyEngine(accountant="prv")
        private, optimizer, loader = engine.make_private_with_epsilon(
            module=model, optimizer=optimizer, data_loader=loader,
            target_epsilon=config.epsilon, target_delta=config.delta, epochs=epochs,
            max_grad_norm=config.max_grad_norm)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # the same notes, once per step; recorded below
            steps = _train_epochs(private, optimizer, loader, engine, config, epochs, augment,
                                  log)
        spent = float(engine.get_epsilon(config.delta))
    finally:
        private.remove_hooks()
        for parameter in model.parameters():
            parameter.grad_sample = None
            parameter.grad = None
    model.eval()
    return {"mechanism": f"DP-SGD (per-sample clipping, Gaussian noise, Poisson sampling) "
                         f"through opacus {opacus.__version__}",
            "accountant": "prv", "epsilon": round(spent, 4), "target_epsilon": config.epsilon,
            "delta": config.delta, "noise_multiplier": float(optimizer.noise_multiplier),
            "max_grad_norm": config.max_grad_norm,
            "sample_rate": float(getattr(loader, "sample_rate", config.batch_size / samples)),
            "expected_batch": config.batch_size, "steps": steps, "epochs": epochs,
            "private_samples": samples, "seconds": round(time.perf_counter() - started, 2),
            "secure_rng": False,
            "rng_note": "noise from torch's default generator, not a cryptographic one "
                        "(opacus secure_mode off): the accounting is exact, but an attacker "
                        "who could recover the generator's state would not be bound by it"}


def _train_epochs(private, optimizer, loader, engine, config: DPConfig, epochs: int, augment,
                  log) -> int:
    """The DP-SGD loop; returns how many optimizer steps it took."""
    steps = 0
    for epoch in range(epochs):
        private.train()
        for inputs, labels in loader:
            if len(inputs) == 0:     # a Poisson batch may be empty
                continue
            if augment is not None:
                inputs = augment(inputs)
            optimizer.zero_grad()
            nn.functional.cross_entropy(private(inputs), labels).backward()
            optimizer.step()
            steps += 1
        log(f"teacher (DP-SGD): epoch {epoch + 1}/{epochs}, epsilon spent "
            f"{engine.get_epsilon(config.delta):.3f}")
    return steps
