"""What a model file claims, checked against what it holds, before anything is allocated.

A config says how many layers and how wide; a weights file says which tensors it holds,
of which shapes, at which bytes. transformers believes the config and allocates the model it
describes, then loads the tensors into it: a 385 KB file whose metadata claims 16,384-wide
layers asks for 34 GB, and a tensor one column short fails deep inside ``load_state_dict``.
Here the two are compared first, on a model built on torch's ``meta`` device (shapes only,
no memory), and the memory the conversion or export will need is estimated from it:

- every size field of the config is a positive integer (``num_hidden_layers = "two"`` is
  refused by name), and the layer and position counts are within a stated bound;
- every tensor the file holds has the shape the described model gives it, and no layer of
  the described model is missing from the file (a config of 4,096 layers over two layers
  of tensors is refused, not filled with random numbers);
- the fp32 copies the work makes fit in the memory this machine has available.

Each refusal is a ``ValueError`` naming the file and the field or tensor, before anything is
written. :mod:`edgepack.export.hf_folder` and :mod:`edgepack.export.gguf_model` call these for a Hugging Face
folder and a GGUF file.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import warnings
from collections.abc import Callable

from edgepack.core.errors import BadInput

MAX_LAYERS = 1024          # no published model comes near; a meta build of more takes seconds
MAX_POSITIONS = 1 << 24    # 16M tokens of context
LAYER_FIELDS = ("num_hidden_layers", "n_layer", "num_layers", "encoder_layers",
                "decoder_layers")
POSITION_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx")
SIZE_FIELDS = LAYER_FIELDS + POSITION_FIELDS + (
    "hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "ffn_dim", "d_ff",
    "feed_forward_length", "num_attention_heads", "n_head", "num_key_value_heads",
    "head_dim", "vocab_size", "type_vocab_size", "num_labels")
LAYER_INDEX = re.compile(r"\.(\d+)\.")
FP32_BYTES = 4
MB = 1024 * 1024


def check_size_value(value, where: str, name: str) -> None:
    """A size field: a positive integer (a per-layer list of non-negative ones), bounded
    for layers and positions; ``where`` names the file and field for the message."""
    if isinstance(value, list):
        if not value or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0
                                for v in value):
            raise ValueError(f"{where} = {value!r}: expected a positive integer or a list of "
                             "non-negative integers (one per layer)")
        value = max(value)
    elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} = {value!r}: expected a positive integer")
    bound = MAX_LAYERS if name in LAYER_FIELDS else (
        MAX_POSITIONS if name in POSITION_FIELDS else None)
    if bound is not None and value > bound:
        raise ValueError(f"{where} = {value:,} is beyond the bound of {bound:,}; no model "
                         "this tool can export has that many")


def meta_model(build: Callable, source: str):
    """The model ``build()`` makes, on the meta device (shapes, no memory, no init)."""
    import torch
    from transformers.modeling_utils import no_init_weights

    try:
        with torch.device("meta"), no_init_weights(), warnings.catch_warnings(), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            model = build()
            if hasattr(model, "tie_weights"):   # tied weights are one tensor, counted once
                model.tie_weights()
            return model
    except (MemoryError, RecursionError):
        raise
    except Exception as exc:  # the config describes no model transformers can build
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ValueError(f"{source}: transformers cannot build the model it describes "
                         f"({type(exc).__name__}: {text})") from exc


def model_tensors(model) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every parameter and buffer the model loads (tied ones once)."""
    found = {name: tuple(p.shape) for name, p in model.named_parameters()}
    found.update((name, tuple(b.shape)) for name, b in model.named_buffers())
    return found


def element_count(model) -> int:
    """Parameters and buffers, tied ones counted once."""
    return sum(math.prod(shape) for shape in model_tensors(model).values())


def check_shapes(found: dict[str, tuple[int, ...]], expected: dict[str, tuple[int, ...]],
                 source: str, described: str, same: Callable | None = None) -> None:
    """Every tensor in ``found`` (name -> shape, the file's) that the model has must have the
    model's shape (``same(a, b)`` decides, exact by default)."""
    same = same or (lambda a, b: a == b)
    for name, shape in found.items():
        own = expected.get(name)
        if own is not None and not same(shape, own):
            raise ValueError(f"{source}: tensor {name!r} has shape {list(shape)}, but the "
                             f"model {described} gives it {list(own)}")


def check_missing(missing: list[str], expected: dict[str, tuple[int, ...]], source: str,
                  described: str) -> None:
    """Refuse when a layer's tensor, or most of the model, is not in the file: transformers
    would fill it with random numbers."""
    layered = [name for name in missing if LAYER_INDEX.search(name)]
    total = sum(math.prod(s) for s in expected.values()) or 1
    absent = sum(math.prod(expected[name]) for name in missing)
    if layered or absent > total / 2:
        first = (layered or missing)[0]
        raise ValueError(f"{source} holds no tensor {first!r}, which the model {described} "
                         f"has ({len(missing)} of its tensors, {absent:,} of {total:,} "
                         "values, are missing: a false layer count or width, or the wrong "
                         "weights file)")


def check_model_fits(what: str, elements: int, copies: int, remedy: str) -> None:
    """Refuse work that holds ``copies`` fp32 copies of a model of ``elements`` values at
    once (a conversion, an export) beyond the memory available now; the estimate comes from
    the model the config describes, before anything is allocated."""
    from edgepack.core.memory_budget import available_bytes

    needed = elements * FP32_BYTES * copies
    available = available_bytes()
    if needed > available:
        raise BadInput(f"{what} needs about {needed / MB:,.0f} MB ({elements:,} values x "
                       f"{FP32_BYTES} bytes x {copies} fp32 copies) but this machine has "
                       f"{available / MB:,.0f} MB available; {remedy}")


__all__ = ["check_missing", "check_model_fits", "check_shapes", "check_size_value",
           "element_count", "meta_model", "model_tensors"]
