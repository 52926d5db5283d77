"""What structured pruning is told about a model, and what the record says was pruned.

A ratio means the same on every architecture: ``ratio`` of every prunable width (conv
channels, linear widths, a transformer's embedding width) is removed, and ``head_ratio``
(by default the same as ``ratio``) of the heads of every attention module. Two things are
always kept: the classifier's outputs (the classes), and -- for Hugging Face models -- the
hidden size, which the model's config fixes and every embedding, residual connection and
LayerNorm shares; there the heads and the FFN width are pruned. The record lists what was
pruned and what was kept, and parameters before and after per kind of layer.
"""

from __future__ import annotations

from torch import nn

from edgepack.compress.attention import (AttentionSite, ffn_expansions, find_attention,
                                         is_hugging_face, num_heads_map, unwrapped_parameters)
from edgepack.export.outputs import first_tensor

NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)


def _unique(modules) -> list[nn.Module]:
    return list({id(m): m for m in modules}.values())


def pruning_plan(model: nn.Module, config, ignored: list[nn.Module]
                 ) -> tuple[dict, list[AttentionSite], dict]:
    """(keyword arguments for torch-pruning's MetaPruner, attention sites, description)."""
    sites = find_attention(model)
    head_ratio = config.ratio if config.head_ratio is None else config.head_ratio
    plan = {"ignored_layers": list(ignored), "unwrapped_parameters": unwrapped_parameters(model),
            "output_transform": first_tensor}
    pruned = [f"channels and widths: ratio {config.ratio}"]
    kept = ["the classifier's outputs"]
    if any(site.projections for site in sites):
        plan.update(num_heads=num_heads_map(sites), prune_num_heads=head_ratio > 0,
                    prune_head_dims=head_ratio == 0, head_pruning_ratio=head_ratio)
        pruned.append(f"attention heads: ratio {head_ratio} (whole heads; head size kept)"
                      if head_ratio > 0 else f"attention head size: ratio {config.ratio} "
                      "(every head keeps the same dimensions; head count kept)")
    if is_hugging_face(model):
        roots = set(plan.get("num_heads", {})) | set(ffn_expansions(model))
        plan["ignored_layers"] = _unique(plan["ignored_layers"] + [
            m for m in model.modules() if isinstance(m, nn.Linear) and m not in roots])
        pruned[0] = f"FFN width: ratio {config.ratio}"
        kept.append(f"hidden size {model.config.hidden_size} (the config fixes it; "
                    "embeddings and every residual connection share it)")
    if plan["unwrapped_parameters"]:
        names = {id(p): n for n, p in model.named_parameters()}
        pruned.append("bare parameters with their channels: " + ", ".join(
            f"{names[id(p)]} (dim {d})" for p, d in plan["unwrapped_parameters"][:4]) +
            (", ..." if len(plan["unwrapped_parameters"]) > 4 else ""))
    return plan, sites, {"pruned": pruned, "kept": kept}


def params_by_kind(model: nn.Module, sites: list[AttentionSite]) -> dict[str, int]:
    """Parameter counts per kind of layer: attention (q/k/v projections and
    ``nn.MultiheadAttention``), conv, linear, norm, embedding, other (bare parameters)."""
    owner = {}
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            kind = "conv"
        elif isinstance(module, nn.Linear):
            kind = "linear"
        elif isinstance(module, NORMS):
            kind = "norm"
        elif isinstance(module, nn.Embedding):
            kind = "embedding"
        else:
            continue
        owner.update({id(p): kind for p in module.parameters(recurse=False)})
    for site in sites:
        layers = site.projections or (site.module,)
        owner.update({id(p): "attention" for layer in layers for p in layer.parameters()})
    counts: dict[str, int] = {}
    for param in model.parameters():
        kind = owner.get(id(param), "other")
        counts[kind] = counts.get(kind, 0) + param.numel()
    return dict(sorted(counts.items()))
