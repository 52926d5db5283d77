"""Why torch-pruning could not follow a model, named so that one retry is enough.

A model torch-pruning cannot follow (a reshape that mixes channels, a bare parameter) is
caught by running it after each step: the error names the layer to add to
``ignored_layers``, and every layer in the same place of the same kind of module (all
twelve blocks of a ViT).
"""

from __future__ import annotations

import torch
from torch import nn

from edgepack.core.errors import BadInput
from edgepack.compress.attention import HEAD_COUNT_ATTRS
from edgepack.export.outputs import first_tensor


class UntraceableModelError(BadInput):
    """torch-pruning could not trace the model (bad input: exit code 2)."""


def _run_with_layer_trace(model: nn.Module, example: tuple):
    """Run the model; on failure, name the innermost layer open and the last one finished."""
    open_layers: list[str] = []
    finished: list[str] = []
    names = {m: n for n, m in model.named_modules()}

    def enter(module, _inputs):
        open_layers.append(names[module])

    def leave(module, _inputs, _output):
        open_layers.pop()
        if not list(module.children()):
            finished.append(names[module])

    handles = [m.register_forward_pre_hook(enter) for m in names] + \
        [m.register_forward_hook(leave) for m in names]
    try:
        with torch.no_grad():
            return model(*example)
    except Exception as exc:
        inner = next((n for n in reversed(open_layers) if n), "")
        culprit = finished[-1] if finished else inner
        where = f"inside {inner!r}" if inner else "in the model's own forward"
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UntraceableModelError(
            f"torch-pruning cannot follow the model: after pruning it fails {where} after "
            f"layer {culprit!r} ({type(exc).__name__}: {text[:160]}); "
            f"{_untraceable_hint(model, inner, culprit)}") from exc
    finally:
        for handle in handles:
            handle.remove()


def layers_like(model: nn.Module, name: str) -> list[str]:
    """``name`` and the layer at the same place in every module of the same kind: one
    failing ``blocks.0.attn.qkv`` names the ``qkv`` of all twelve blocks."""
    table = dict(model.named_modules())
    if "." not in name or name not in table:
        return [name]
    parent, leaf = name.rsplit(".", 1)
    kind = type(table[parent])
    return [f"{n}.{leaf}" for n, m in table.items()
            if type(m) is kind and f"{n}.{leaf}" in table] or [name]


def _untraceable_hint(model: nn.Module, inner: str, culprit: str) -> str:
    """What to change: for attention that reshapes to its input width, head-size pruning;
    otherwise every layer like the culprit, named at once."""
    module = dict(model.named_modules()).get(inner)
    if module is not None and any(isinstance(getattr(module, a, None), int)
                                  for a in HEAD_COUNT_ATTRS):
        return (f"{type(module).__name__} reshapes its heads back to its input width (as "
                "timm's Attention does); set prune.head_ratio=0 to prune every head's "
                "dimensions instead of whole heads, which keeps heads x head size equal to "
                "the width")
    like = layers_like(model, culprit)
    if len(like) == 1:
        return f"add {culprit!r} to prune.ignored_layers, or use method='unstructured'"
    return (f"add all {len(like)} layers like it to prune.ignored_layers: "
            f"{', '.join(repr(n) for n in like)}; or use method='unstructured'")


def check_still_runs(model: nn.Module, example: tuple, output_shape: tuple) -> None:
    """The pruned model must run on the example and give outputs of the same shape."""
    out = first_tensor(_run_with_layer_trace(model, example))
    if tuple(out.shape) != output_shape:
        raise UntraceableModelError(
            f"after pruning the model outputs shape {list(out.shape)} instead of "
            f"{list(output_shape)}; add its output layer to prune.ignored_layers")


def trace_error(model: nn.Module, exc: Exception) -> str:
    """Name the layer torch-pruning choked on, when the error lets us find it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    culprit = next((n for n, m in model.named_modules()
                    if n and type(m).__name__ in text), None)
    hint = (f"; add {culprit!r} to prune.ignored_layers" if culprit else
            "; add the layer to prune.ignored_layers or use method='unstructured'")
    return f"torch-pruning cannot trace the model ({type(exc).__name__}: {text[:200]}){hint}"
