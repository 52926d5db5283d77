"""Tiny GGUF files for the tests, good and hostile, written in milliseconds.

:func:`write_llama_gguf` writes a complete Llama-architecture GGUF (metadata, a byte-level
BPE vocabulary, F32 tensors of random values) that transformers converts; its keyword
arguments bend it into the hostile files the checks must refuse: metadata that claims other
sizes, tensors of the wrong shape or missing, another architecture. :func:`raw_gguf` writes
a header by hand, for counts no writer would produce.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

SPECIAL = ["<unk>", "<s>", "</s>"]


def byte_tokens() -> list[str]:
    """The 256 byte-level characters (GPT-2's alphabet) and two merges' results."""
    from tokenizers import pre_tokenizers

    return SPECIAL + sorted(pre_tokenizers.ByteLevel.alphabet()) + ["Ġt", "he"]


def llama_tensors(layers: int, hidden: int, ffn: int, heads: int, kv_heads: int,
                  vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """GGUF name -> array (torch order) of a Llama model of these sizes, tied embedding."""
    rng = np.random.default_rng(seed)
    kv = hidden // heads * kv_heads
    shapes = {"token_embd.weight": (vocab, hidden), "output_norm.weight": (hidden,)}
    for i in range(layers):
        shapes.update({f"blk.{i}.attn_norm.weight": (hidden,),
                       f"blk.{i}.attn_q.weight": (hidden, hidden),
                       f"blk.{i}.attn_k.weight": (kv, hidden),
                       f"blk.{i}.attn_v.weight": (kv, hidden),
                       f"blk.{i}.attn_output.weight": (hidden, hidden),
                       f"blk.{i}.ffn_norm.weight": (hidden,),
                       f"blk.{i}.ffn_gate.weight": (ffn, hidden),
                       f"blk.{i}.ffn_up.weight": (ffn, hidden),
                       f"blk.{i}.ffn_down.weight": (hidden, ffn)})
    return {name: rng.normal(0, 0.2, shape).astype(np.float32) for name, shape in shapes.items()}


def _add(writer, key: str, value) -> None:
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value) if 0 <= value < 2**32 else writer.add_uint64(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        writer.add_array(key, list(value))


def write_llama_gguf(path, *, layers: int = 2, hidden: int = 16, ffn: int = 32, heads: int = 2,
                     kv_heads: int = 1, architecture: str = "llama", metadata: dict | None = None,
                     shapes: dict | None = None, drop: tuple = (), tensors: bool = True,
                     seed: int = 0) -> Path:
    """A GGUF of a tiny Llama. ``metadata``: keys to add or override (None removes one);
    ``shapes``: tensor name -> the shape to write instead; ``drop``: tensors left out;
    ``tensors=False``: metadata alone."""
    import gguf

    tokens = byte_tokens()
    meta = {"general.architecture": architecture, f"{architecture}.block_count": layers,
            f"{architecture}.context_length": 64, f"{architecture}.embedding_length": hidden,
            f"{architecture}.feed_forward_length": ffn,
            f"{architecture}.attention.head_count": heads,
            f"{architecture}.attention.head_count_kv": kv_heads,
            f"{architecture}.attention.layer_norm_rms_epsilon": 1e-6,
            f"{architecture}.rope.freq_base": 10000.0,
            "tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [1] * len(tokens),
            "tokenizer.ggml.merges": ["Ġ t", "h e"],
            "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2}
    meta.update(metadata or {})
    writer = gguf.GGUFWriter(str(path), architecture, use_temp_file=False)
    writer.kv_data[0].pop("general.architecture", None)   # written below, maybe overridden
    for key, value in meta.items():
        if value is not None:
            _add(writer, key, value)
    arrays = llama_tensors(layers, hidden, ffn, heads, kv_heads, len(tokens), seed) \
        if tensors else {}
    rng = np.random.default_rng(seed + 1)
    for name, array in arrays.items():
        if name in drop:
            continue
        if shapes and name in shapes:
            array = rng.normal(0, 0.2, shapes[name]).astype(np.float32)
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)


def raw_gguf(path, entries: bytes, tensor_count: int = 0, kv_count: int = 1,
             tail: bytes = b"") -> Path:
    """A GGUF v3 header written by hand: counts, then ``entries`` (encoded metadata and
    tensor entries), then ``tail``."""
    Path(path).write_bytes(b"GGUF" + struct.pack("<IQQ", 3, tensor_count, kv_count) +
                           entries + tail)
    return Path(path)


def gguf_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<Q", len(raw)) + raw


def array_entry(key: str, item_type: int, count: int, payload: bytes = b"") -> bytes:
    """A metadata entry holding an array that declares ``count`` items of ``item_type``."""
    return gguf_string(key) + struct.pack("<IIQ", 9, item_type, count) + payload
