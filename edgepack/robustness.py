"""Robustness: accuracy under small adversarial perturbations (FGSM and PGD).

Compression can leave clean accuracy intact while making a model brittle. For each stage the
report gives its accuracy on inputs perturbed against the torch model it came from (for an
ONNX artifact: the torch model it was exported from), run through the artifact itself on
ONNX Runtime. ``eps`` is the L-infinity budget in units of the evaluation inputs' standard
deviation, so one setting means the same on any data scale.

- FGSM (Goodfellow et al. 2015): one step of size eps along the sign of the input gradient.
- PGD (Madry et al. 2018): ``steps`` steps of size 2.5 * eps / steps, projected back into
  the eps-ball each step, from a random start inside it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def fgsm(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """One signed-gradient step of size ``eps`` that increases the loss."""
    x = inputs.clone().requires_grad_(True)
    F.cross_entropy(model(x), labels).backward()
    return (inputs + eps * x.grad.sign()).detach()


def pgd(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, eps: float,
        steps: int = 10, seed: int = 0) -> torch.Tensor:
    """Projected gradient descent inside the L-infinity ball of radius ``eps``."""
    generator = torch.Generator().manual_seed(seed)
    step = 2.5 * eps / steps
    noise = (torch.rand(inputs.shape, generator=generator) * 2 - 1) * eps
    x = (inputs + noise).detach()
    for _ in range(steps):
        x.requires_grad_(True)
        F.cross_entropy(model(x), labels).backward()
        x = x.detach() + step * x.grad.sign()
        x = inputs + (x - inputs).clamp(-eps, eps)
    return x.detach()


ATTACKS = {"fgsm": fgsm, "pgd": pgd}


def onnx_accuracy(session, inputs: np.ndarray, labels: np.ndarray, batch: int = 256) -> float:
    """Top-1 accuracy of an ONNX Runtime session on ``inputs``."""
    name = session.get_inputs()[0].name
    correct = 0
    for start in range(0, len(inputs), batch):
        logits = session.run(None, {name: inputs[start:start + batch]})[0]
        correct += int((logits.argmax(-1) == labels[start:start + batch]).sum())
    return correct / len(labels)


def robustness(source: nn.Module, onnx_path, inputs: torch.Tensor, labels: torch.Tensor,
               eps_values=(0.1,), samples: int = 512) -> dict:
    """``{"fgsm": {"0.1": acc}, "pgd": {"0.1": acc}}`` for the ONNX model at ``onnx_path``."""
    import onnxruntime as ort

    if not eps_values or samples <= 0:
        return {}
    inputs, labels = inputs[:samples].float(), labels[:samples]
    scale = float(inputs.std())
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    was_training = source.training
    source.eval()
    params = [p.requires_grad for p in source.parameters()]
    for p in source.parameters():
        p.requires_grad_(False)  # only the input needs a gradient
    try:
        out: dict[str, dict[str, float]] = {}
        for name, attack in ATTACKS.items():
            out[name] = {}
            for eps in eps_values:
                adversarial = attack(source, inputs, labels, eps * scale)
                out[name][str(eps)] = onnx_accuracy(session, adversarial.numpy(), labels.numpy())
        return out
    finally:
        for p, flag in zip(source.parameters(), params):
            p.requires_grad_(flag)
        source.train(was_training)
