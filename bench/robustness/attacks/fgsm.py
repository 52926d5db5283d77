"""FGSM (Goodfellow et al. 2015): one step of size eps along the sign of the input gradient,
crafted on a torch model and run through the artifact (white-box, or transfer for an
ONNX-only stage)."""

from __future__ import annotations

from edgepack.bench.robustness.attacks import ATTACKS, AttackSpec
from edgepack.bench.robustness.attacks._gradients import input_gradient


def fgsm(model, inputs, labels, eps: float):
    """One signed-gradient step of size ``eps`` (absolute, in input units) up the loss."""
    return (inputs + eps * input_gradient(model, inputs, labels).sign()).detach()


ATTACKS.register(AttackSpec(
    "fgsm", "FGSM", order=20,
    craft_batch=lambda model, x, y, eps, steps, seed: fgsm(model, x, y, eps)))
