"""The int4 method's weights by role: the layers, the lm_head and the token embedding.

As in onnxruntime-genai's quantization config, a choice for one part of the model is an
override matched by that part's role, not a branch in the method. Three roles, each
inheriting what an override leaves unset from its parent: the ``layers`` (every MatMul, as
the settings say), the ``lm_head`` (from the layers) and the ``embedding`` (from the lm_head:
a tied model stores the two as one matrix, which the embedding's Gather then reads once).

Overrides come from two places, the user's first:

- the settings: ``embedding_bits`` other than ``bits`` puts the tied embedding / lm_head in
  round-to-nearest blocks of that width (8-bit ones symmetric: llama.cpp's Q8_0 grid);
- the algorithm (:attr:`Int4Algorithm.overrides`), where its blocks do not suit a role:
  offset's lm_head in round-to-nearest blocks, HQQ's embedding copy in 8 bits.

For SmolLM2 with ``algorithm = "offset", embedding_bits = 8``: the layers are offset blocks,
the lm_head and the embedding share one set of symmetric 8-bit round-to-nearest blocks.
The lm_head is quantized on its own wherever its blocks differ from the layers'.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ROLES = ("lm_head", "embedding")   # each inherits from the one before it (the layers first)


@dataclass(frozen=True)
class Blocks:
    """How one role's weights are stored."""

    algorithm: str
    bits: int
    symmetric: bool


@dataclass(frozen=True)
class RoleOverride:
    """Blocks for the roles named, in place of the parent's; None fields are inherited."""

    roles: tuple[str, ...]
    algorithm: str | None = None
    bits: int | None = None
    symmetric: bool | None = None

    def __post_init__(self):
        unknown = [r for r in self.roles if r not in ROLES]
        if unknown:
            raise ValueError(f"an int4 override matches the roles {', '.join(ROLES)}; got "
                             f"{unknown[0]!r}")


def settings_overrides(settings) -> tuple[RoleOverride, ...]:
    """What the user's ``embedding_bits`` asks of the tied embedding / lm_head."""
    width = settings.embedding_bits
    if width in (0, settings.bits):
        return ()
    return (RoleOverride(ROLES, algorithm="rtn", bits=width,
                         symmetric=True if width == 8 else settings.symmetric),)


def role_blocks(settings, algorithm_overrides=()) -> dict[str, Blocks]:
    """The blocks of every role (only ``layers`` when the embedding is left in float): the
    first override matching a role sets a field, the user's before the algorithm's."""
    parent = Blocks(settings.algorithm, settings.bits, settings.symmetric)
    blocks = {"layers": parent}
    if not settings.quantize_embedding:
        return blocks
    overrides = settings_overrides(settings) + tuple(algorithm_overrides)
    for role in ROLES:
        matching = [o for o in overrides if role in o.roles]
        chosen = {f.name: next((getattr(o, f.name) for o in matching
                                if getattr(o, f.name) is not None), getattr(parent, f.name))
                  for f in dataclasses.fields(Blocks)}
        blocks[role] = parent = Blocks(**chosen)
    return blocks


__all__ = ["Blocks", "ROLES", "RoleOverride", "role_blocks", "settings_overrides"]
