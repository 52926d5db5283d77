"""Will a generation fit in memory? An estimate made before the prompt reaches ONNX Runtime.

A decoder's memory grows with the tokens it holds, not with its weights alone: a 120 KB
prompt to a small model asks ONNX Runtime for over 100 GB in one prefill. Three terms, each
a tensor the runtime must hold at once, so the estimate is a floor, never an excuse:

- the **KV cache**: ``layers x 2 x kv_heads x head_dim`` values for every token held
  (prompt and continuation), in the cache's own type;
- the **attention scores** of the prefill: ``heads x prompt x prompt`` float32 values for one
  layer (a plain attention graph makes the whole matrix; fused kernels make less, and the
  estimate then only errs low);
- the prefill's **logits**: ``prompt x vocabulary`` float32 values (an exported graph
  computes them for every prompt position).

The number of query heads is read from the graph: a fused attention node's ``num_heads``,
else the embedding table's width over the head size (hidden = heads x head_dim, as in
Llama, Qwen, Mistral and Phi), else the key/value heads (a floor).
"""

from __future__ import annotations

import numpy as np

from edgepack.core.memory_budget import MB, check_needed

ATTENTION_OPS = ("GroupQueryAttention", "MultiHeadAttention", "Attention")
FLOAT32 = 4


def query_heads(model, layout) -> int:
    """The number of attention (query) heads of the decoder graph ``model`` (an ONNX
    ``ModelProto``, weights not needed), from what the graph shows (see module docstring)."""
    for node in model.graph.node:
        if node.op_type in ATTENTION_OPS:
            for attribute in node.attribute:
                if attribute.name == "num_heads" and attribute.i > 0:
                    return int(attribute.i)
    width = _embedding_width(model)
    if width and layout.head_dim and width % layout.head_dim == 0:
        return max(layout.kv_heads, width // layout.head_dim)
    return layout.kv_heads


def _embedding_width(model) -> int | None:
    """The width (hidden size) of the table ``input_ids`` is gathered from, if found."""
    tables = {t.name: list(t.dims) for t in model.graph.initializer if len(t.dims) == 2}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) >= 2 and node.input[1] == "input_ids" \
                and node.input[0] in tables:
            return int(tables[node.input[0]][1])
    return None


def generation_bytes(layout, heads: int, vocab: int, prompt_tokens: int,
                     new_tokens: int) -> dict[str, int]:
    """The estimate's three terms, in bytes (see the module docstring)."""
    held = prompt_tokens + new_tokens
    itemsize = np.dtype(layout.past_dtype).itemsize
    return {"kv_cache": layout.layers * 2 * layout.kv_heads * layout.head_dim * held * itemsize,
            "attention": heads * prompt_tokens * prompt_tokens * FLOAT32,
            "logits": prompt_tokens * vocab * FLOAT32}


def check_generation_fits(decoder, prompt_tokens: int, new_tokens: int,
                          remedy: str = "give a shorter prompt or fewer new tokens") -> None:
    """Refuse a prompt and continuation whose estimate exceeds the memory available now
    (the model is loaded already, so its weights are no longer available): one line."""
    from edgepack.core.onnx_files import load_onnx_header

    heads = query_heads(load_onnx_header(decoder.path), decoder.layout)
    terms = generation_bytes(decoder.layout, heads, decoder.vocab_size, prompt_tokens,
                             new_tokens)
    detail = (f"KV cache {terms['kv_cache'] / MB:,.0f} MB, prefill attention "
              f"{terms['attention'] / MB:,.0f} MB for {heads} heads, logits "
              f"{terms['logits'] / MB:,.0f} MB")
    check_needed(f"a {prompt_tokens:,}-token prompt and {new_tokens:,} new tokens on "
                 f"{decoder.path}", sum(terms.values()), detail, remedy)


__all__ = ["check_generation_fits", "generation_bytes", "query_heads"]
