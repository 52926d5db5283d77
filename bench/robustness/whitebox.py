"""White-box attacks on a torch model, and the random-noise control.

- FGSM (Goodfellow et al. 2015): one step of size eps along the sign of the input gradient.
- PGD (Madry et al. 2018): ``steps`` signed-gradient steps of size 2.5 * eps / steps from a
  random start inside the L-infinity ball, projected back into it after every step.
- Sign noise: a random +-eps at every input value. Same budget, no gradient: the floor any
  attack must beat to have found something.

``eps`` here is absolute (in input units); callers scale their standard-deviation budget
first. The model's parameters get no gradient (``torch.autograd.grad`` on the input only),
so crafting never disturbs training state; the model is run in eval mode.
"""

from __future__ import annotations

import numpy as np


def _input_gradient(model, inputs, labels, loss_fn=None):
    """d loss / d inputs, the model in eval mode (training mode restored after)."""
    import torch
    from torch.nn import functional as F

    was_training = model.training
    model.eval()
    try:
        x = inputs.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(model, x) if loss_fn is not None else F.cross_entropy(model(x), labels)
            (grad,) = torch.autograd.grad(loss, x)
    finally:
        model.train(was_training)
    return grad


def fgsm(model, inputs, labels, eps: float):
    """One signed-gradient step of size ``eps`` that increases the loss."""
    return (inputs + eps * _input_gradient(model, inputs, labels).sign()).detach()


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
        x = x + step * _input_gradient(model, x, labels, loss_fn).sign()
        x = (inputs + (x - inputs).clamp(-eps, eps)).detach()
    return x


def sign_noise(inputs: np.ndarray, eps: float, seed: int = 0) -> np.ndarray:
    """The control: ``inputs`` plus a random sign times ``eps`` at every value."""
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0], dtype=inputs.dtype), size=inputs.shape)
    return (inputs + eps * signs).astype(inputs.dtype)


def craft(attack: str, model, inputs: np.ndarray, labels: np.ndarray, eps: float,
          steps: int = 10, seed: int = 0, batch: int = 256) -> np.ndarray:
    """Adversarial copies of ``inputs`` (numpy in, numpy out), crafted in batches."""
    import torch

    out = []
    for start in range(0, len(inputs), batch):
        x = torch.from_numpy(np.ascontiguousarray(inputs[start:start + batch]))
        y = torch.from_numpy(np.ascontiguousarray(labels[start:start + batch])).long()
        if attack == "fgsm":
            adversarial = fgsm(model, x, y, eps)
        else:
            adversarial = pgd(model, x, y, eps, steps=steps, seed=seed + start)
        out.append(adversarial.numpy())
    return np.concatenate(out)
