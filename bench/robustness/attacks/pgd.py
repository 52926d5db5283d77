"""PGD (Madry et al. 2018): ``steps`` signed-gradient steps of size 2.5 * eps / steps from a
random start inside the L-infinity ball, projected back into it after every step. Crafted on
a torch model and run through the artifact; adversarial training uses it too
(:mod:`edgepack.compress.adversarial`)."""

from __future__ import annotations

from edgepack.bench.robustness.attacks import ATTACKS, AttackSpec
from edgepack.bench.robustness.attacks._gradients import input_gradient


def pgd(model, inputs, labels, eps: float, steps: int = 10, seed: int | None = 0,
        loss_fn=None):
    """Projected gradient descent inside the L-infinity ball of radius ``eps``.

    ``loss_fn(model, x)`` replaces cross-entropy on ``labels`` when given (adversarial
    training uses the stage's own loss, e.g. distillation's soft targets). ``seed=None``
    draws the random start from torch's global generator (the trainer seeds it per epoch,
    so a resumed run draws the same starts).
    """
    import torch

    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    step = 2.5 * eps / steps
    start = (torch.rand(inputs.shape, generator=generator) * 2 - 1) * eps
    # Drawn on the CPU (the same start on any device), then moved beside the inputs.
    x = (inputs + start.to(inputs.device, inputs.dtype)).detach()
    for _ in range(steps):
        x = x + step * input_gradient(model, x, labels, loss_fn).sign()
        x = (inputs + (x - inputs).clamp(-eps, eps)).detach()
    return x


ATTACKS.register(AttackSpec(
    "pgd", "PGD", order=30,
    craft_batch=lambda model, x, y, eps, steps, seed: pgd(model, x, y, eps, steps, seed)))
