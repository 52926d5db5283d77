"""The input gradient the white-box attacks follow, taken without touching the model's
parameters (``torch.autograd.grad`` on the input only, the model in eval mode)."""

from __future__ import annotations


def input_gradient(model, inputs, labels, loss_fn=None):
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
