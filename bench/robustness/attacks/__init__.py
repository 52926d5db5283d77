"""Attacks on the deployed model: one file each, registered where it is defined.

An attack is an :class:`AttackSpec`: a name (the recipe's and ``--attacks``' word), the label
the report prints, and either ``run(inputs, eps, budget)`` (the artifact's scores are all it
needs: the noise control, Square Attack) or ``craft_batch(model, x, y, budget, steps, seed)``
(white-box: crafted on a torch model, then run through the artifact). :data:`ATTACKS` finds
every module of this package, so a new attack is one new file; the evaluation, the report's
table and plot, and the recipe's checks all read the registry.

Example: a new control, uniform noise in the eps-ball (a file ``uniform.py`` here)::

    def run(inputs, eps, budget):
        rng = np.random.default_rng(inputs.config.seed)
        noisy = inputs.x + rng.uniform(-budget, budget, inputs.x.shape).astype(np.float32)
        return {"accuracy": accuracy(inputs.predict, noisy, inputs.y)}

    ATTACKS.register(AttackSpec("uniform", "uniform noise", run=run, order=15))

``[robustness] attacks = ["uniform", "pgd"]`` then measures it on every stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from edgepack.core.registry import Registry


@dataclass
class AttackInputs:
    """What an attack works on: the artifact's ``predict`` (numpy batch -> scores), the
    inputs and labels, the torch ``source`` white-box attacks craft on (or None), the
    evaluation's config (steps, query budget, seed), which samples the model gets right
    before any attack, and the examples already crafted, by ``(attack, eps)`` (an fp32 file
    and its int8 copy share their parent's)."""

    predict: Callable[[np.ndarray], np.ndarray]
    x: np.ndarray
    y: np.ndarray
    config: Any
    clean_correct: np.ndarray
    source: Any = None
    crafted: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AttackSpec:
    """One attack. ``run(inputs, eps, budget) -> {"accuracy": ..., ...}`` (``eps`` in input
    standard deviations, the key the report uses; ``budget`` the same in input units); a
    white-box attack gives ``craft_batch`` instead and is run through the artifact."""

    name: str
    label: str
    run: Callable[[AttackInputs, float, float], dict] | None = None
    craft_batch: Callable | None = None
    order: int = 100
    counts_queries: bool = False   # its result says how many model calls it spent
    settings: None = None

    def __post_init__(self):
        if (self.run is None) == (self.craft_batch is None):
            raise ValueError(f"attack {self.name!r}: give run (score-based) or craft_batch "
                             "(white-box), one of the two")

    @property
    def needs_source(self) -> bool:
        """A white-box attack needs the torch model to take gradients from."""
        return self.craft_batch is not None

    def attack(self, inputs: AttackInputs, eps: float, budget: float) -> dict:
        if self.run is not None:
            return self.run(inputs, eps, budget)
        key = (self.name, eps)
        if key not in inputs.crafted:
            inputs.crafted[key] = craft(self.name, inputs.source, inputs.x, inputs.y, budget,
                                        inputs.config.pgd_steps, inputs.config.seed)
        return {"accuracy": accuracy(inputs.predict, inputs.crafted[key], inputs.y)}


ATTACKS: Registry[AttackSpec] = Registry("attack", __name__)


def accuracy(predict, inputs: np.ndarray, labels: np.ndarray) -> float:
    return float((predict(inputs).argmax(-1) == labels).mean())


def query_summary(queries: np.ndarray, attacked: np.ndarray, budget: int) -> dict:
    """Model calls per sample over the samples the attack worked on (clean-correct ones)."""
    used = queries[attacked] if attacked.any() else np.zeros(1, dtype=np.int64)
    return {"mean": float(used.mean()), "median": float(np.median(used)), "max": int(used.max()),
            "budget": budget, "attacked": int(attacked.sum())}


def craft(attack: str, model, inputs: np.ndarray, labels: np.ndarray, eps: float,
          steps: int = 10, seed: int = 0, batch: int = 256) -> np.ndarray:
    """Adversarial copies of ``inputs`` (numpy in, numpy out) by a white-box ``attack``,
    crafted in batches (each batch's random start seeded from ``seed`` and its offset)."""
    import torch

    spec = ATTACKS.get(attack)
    if spec.craft_batch is None:
        raise ValueError(f"attack {attack!r} is not white-box: it crafts nothing on a model")
    out = []
    for start in range(0, len(inputs), batch):
        x = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch]))
        y = torch.from_numpy(np.ascontiguousarray(labels[start:start + batch])).long()
        out.append(spec.craft_batch(model, x, y, eps, steps, seed + start).numpy())
    return np.concatenate(out)


__all__ = ["ATTACKS", "AttackInputs", "AttackSpec", "accuracy", "craft", "query_summary"]
