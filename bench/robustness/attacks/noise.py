"""The control: a random +-eps at every input value. Same budget as the attacks, no gradient
and no query: the floor any attack must beat to have found something."""

from __future__ import annotations

import numpy as np

from edgepack.bench.robustness.attacks import ATTACKS, AttackSpec, accuracy


def sign_noise(inputs: np.ndarray, eps: float, seed: int = 0) -> np.ndarray:
    """``inputs`` plus a random sign times ``eps`` at every value."""
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0], dtype=inputs.dtype), size=inputs.shape)
    return (inputs + eps * signs).astype(inputs.dtype)


def run(inputs, eps: float, budget: float) -> dict:
    noisy = sign_noise(inputs.x, budget, inputs.config.seed)
    return {"accuracy": accuracy(inputs.predict, noisy, inputs.y)}


ATTACKS.register(AttackSpec("noise", "noise", run=run, order=10))
