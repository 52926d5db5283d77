"""What torch-pruning must be told about attention, found in the model.

Multi-head attention reshapes its projections to ``(batch, tokens, heads, head_dim)``: a
tracer sees the reshape, not the heads, so pruning the projections' outputs freely would cut
across heads and break the reshape. torch-pruning prunes attention correctly when given

- ``num_heads``: each q/k/v projection (or the fused ``qkv``) and its head count, so whole
  heads are removed (``prune_num_heads``) or every head loses the same dimensions;
- ``unwrapped_parameters``: bare parameters outside any layer it knows (a ViT's
  ``cls_token`` and ``pos_embed``, ConvNeXt's layer-scale ``gamma``) with the dimension that
  follows the channels -- given, they are pruned with their channels and not warned about.

After pruning, the attention modules still hold their old head counts in attributes that
``forward`` reads; :func:`update_head_counts` writes the new ones (``num_heads``,
``head_dim`` / ``attention_head_size``, ``all_head_size``).

Found here: modules with an integer ``num_heads`` (timm), ``num_attention_heads`` (Hugging
Face) or ``n_heads`` beside a fused ``qkv`` linear or separate ``q``/``k``/``v``,
``query``/``key``/``value`` or ``q_proj``/``k_proj``/``v_proj`` linears.
``nn.MultiheadAttention`` is pruned by torch-pruning's own handler (embedding dimensions,
heads kept) and is listed so the record shows it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

HEAD_COUNT_ATTRS = ("num_heads", "num_attention_heads", "n_heads")
SEPARATE_PROJECTIONS = (("q", "k", "v"), ("query", "key", "value"), ("q_proj", "k_proj", "v_proj"))
HEAD_SIZE_ATTRS = ("head_dim", "attention_head_size", "head_size")


@dataclass
class AttentionSite:
    """One attention module: its name, head-count attribute and q/k/v projections."""

    name: str
    module: nn.Module
    heads_attr: str
    projections: tuple[nn.Module, ...]   # (qkv,) when fused, else (q, k, v); () for MHA

    @property
    def fused(self) -> bool:
        return len(self.projections) == 1

    @property
    def heads(self) -> int:
        return int(getattr(self.module, self.heads_attr))

    @property
    def head_dim(self) -> int:
        width = self.projections[0].out_features if self.projections else self.module.embed_dim
        return width // ((3 if self.fused else 1) * self.heads)

    def describe(self) -> dict:
        return {"name": self.name, "heads": self.heads, "head_dim": self.head_dim}


def _heads_attr(module: nn.Module) -> str | None:
    return next((a for a in HEAD_COUNT_ATTRS
                 if isinstance(getattr(module, a, None), int)
                 and not isinstance(getattr(module, a), bool)), None)


def _projections(module: nn.Module) -> tuple[nn.Module, ...] | None:
    qkv = getattr(module, "qkv", None)
    if isinstance(qkv, nn.Linear) and qkv.out_features % 3 == 0:
        return (qkv,)
    for names in SEPARATE_PROJECTIONS:
        layers = tuple(getattr(module, n, None) for n in names)
        if all(isinstance(layer, nn.Linear) for layer in layers):
            return layers
    return None


def find_attention(model: nn.Module) -> list[AttentionSite]:
    """Every attention module of ``model`` that torch-pruning needs to be told about."""
    sites = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            sites.append(AttentionSite(name, module, "num_heads", ()))
            continue
        attr = _heads_attr(module)
        projections = _projections(module) if attr else None
        if attr and projections:
            sites.append(AttentionSite(name, module, attr, projections))
    return sites


def num_heads_map(sites: list[AttentionSite]) -> dict[nn.Module, int]:
    """torch-pruning's ``num_heads``: every q/k/v projection and its head count."""
    return {layer: site.heads for site in sites for layer in site.projections}


def update_head_counts(sites: list[AttentionSite], pruner) -> None:
    """Write each module's new head count and head size after a pruning step."""
    for site in sites:
        if not site.projections:
            continue  # nn.MultiheadAttention: torch-pruning updates it itself
        first = site.projections[0]
        heads = int(pruner.num_heads[first])
        setattr(site.module, site.heads_attr, heads)
        width = first.out_features // (3 if site.fused else 1)
        for attr in HEAD_SIZE_ATTRS:
            if isinstance(getattr(site.module, attr, None), int):
                setattr(site.module, attr, width // heads)
        if isinstance(getattr(site.module, "all_head_size", None), int):
            site.module.all_head_size = width


def _known_layer_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters held by layers torch-pruning has a pruner for."""
    import torch_pruning as tp

    known = set()
    for module in model.modules():
        op_type = tp.ops.module2type(module)
        if op_type in tp.pruner.function.PrunerBox and op_type != tp.ops.OPTYPE.ELEMENTWISE:
            known.update(id(p) for p in module.parameters())
    return known


def unwrapped_parameters(model: nn.Module) -> list[tuple[nn.Parameter, int]]:
    """Bare parameters and the dimension to prune with their channels.

    The channel dimension of a bare parameter is its last one longer than 1: ``(1, 1, D)``
    for a class token, ``(1, N, D)`` for a position embedding, ``(D,)`` for a layer scale,
    ``(D, 1, 1)`` for a channels-first scale. Parameters with no such dimension are left out.
    """
    known = _known_layer_parameters(model)
    found = []
    for param in model.parameters():
        if id(param) in known:
            continue
        dims = [d for d, size in enumerate(param.shape) if size > 1]
        if dims:
            found.append((param, dims[-1]))
    return found


def ffn_expansions(model: nn.Module) -> list[nn.Linear]:
    """Hugging Face FFN up-projections (``...Intermediate.dense``), pruned in width."""
    return [m.dense for m in model.modules()
            if type(m).__name__.endswith("Intermediate")
            and isinstance(getattr(m, "dense", None), nn.Linear)]


def is_hugging_face(model: nn.Module) -> bool:
    """A transformers model: its config fixes the hidden size, which pruning keeps."""
    config = getattr(model, "config", None)
    return type(model).__module__.startswith("transformers.") and \
        isinstance(getattr(config, "hidden_size", None), int)
