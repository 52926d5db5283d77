"""The model a GGUF file describes, compared with the tensors it holds, before conversion.

A GGUF's metadata says what model it is (``llama.block_count = 30``,
``llama.embedding_length = 576``, ...); transformers turns that into a config, allocates the
model in fp32 and loads the de-quantized tensors into it. A file whose metadata claims 4,096
layers over two layers of tensors, or 16,384-wide layers over 8-wide tensors, would have
transformers allocate tens of gigabytes first and fail (or crawl) afterwards. Here the config
is derived from the metadata the way transformers derives it, the model is built on the meta
device (:mod:`edgepack.export.model_files`), and every tensor is compared with it: the right blocks,
the right element counts, nothing missing; then the memory the conversion needs is checked.
The tokenizer's arrays are checked too, since the conversion builds it from them.
"""

from __future__ import annotations

import re

from edgepack.export.gguf_header import GgufArray, GgufHeader
from edgepack.export.model_files import (SIZE_FIELDS, check_missing, check_model_fits, check_shapes,
                                         check_size_value, element_count, meta_model)

# transformers de-quantizes each tensor to a numpy fp32 array, copies it into torch, keeps
# all of them, then loads them into the model it allocated: three fp32 copies at the peak.
CONVERSION_COPIES = 3
RENAMED = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe"}   # transformers' model_type
GGUF_ARCH_NAMES = {"cohere": "command-r", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe",
                   "gemma3_text": "gemma3", "umt5": "t5"}     # and back, for tensor names
BLOCK = re.compile(r"blk\.(\d+)\.")
REQUIRED = ("block_count", "embedding_length")
TOKENIZER_ARRAYS = {"tokenizer.ggml.tokens": "string", "tokenizer.ggml.scores": "float32",
                    "tokenizer.ggml.token_type": "int32", "tokenizer.ggml.merges": "string"}


def _renamed_architecture(header: GgufHeader) -> str:
    """The architecture as transformers renames it before reading the metadata."""
    arch = header.architecture
    if "llama" in arch and header.metadata.get("general.name") == "mistral":
        return "mistral"
    for old, new in RENAMED.items():
        if old in arch:
            return new
    return arch


def model_type(header: GgufHeader) -> str:
    """The transformers model type the architecture becomes (as transformers names it)."""
    renamed = _renamed_architecture(header)
    return {"gemma3": "gemma3_text"}.get(renamed, renamed)


def check_causal(header: GgufHeader) -> str:
    """The model type, refused unless transformers loads it as a causal language model (a
    decoder with a KV cache, which is what ``--gguf`` exports)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    kind = model_type(header)
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"{header.path}: metadata 'general.architecture' = "
                         f"{header.architecture!r} is not a decoder-only language model; "
                         "--gguf exports causal decoders (llama, mistral, qwen2, phi3, gemma2, "
                         "...), not encoders or encoder-decoders such as t5")
    return kind


def _plain(value):
    """A metadata value as transformers reads it: a one-item array is its item."""
    if isinstance(value, GgufArray):
        if value.values is None:
            return None
        return value.values[0] if len(value.values) == 1 else value.values
    return value


def _from_tensors(header: GgufHeader) -> dict:
    """The config entries transformers reads from which tensors exist."""
    names = {t.name for t in header.tensors}
    found = {"tie_word_embeddings": "output.weight" not in names or
             header.architecture in ("falcon", "bloom")}
    if "stablelm" in header.architecture:
        found["use_qkv_bias"] = any(f"attn_{x}.bias" in n for n in names for x in "qkv")
        found["use_parallel_residual"] = not any("ffn_norm" in n for n in names)
    return found


def config_entries(header: GgufHeader, kind: str) -> dict:
    """``{config field: (value, metadata key)}``: the transformers config the metadata
    makes, each entry with the key it came from (for messages)."""
    from transformers.integrations import GGUF_CONFIG_MAPPING

    arch, renamed = header.architecture, _renamed_architecture(header)
    entries = {"model_type": (kind, "general.architecture")}
    for key, raw in header.metadata.items():
        prefix, _, field = key.replace(arch, renamed, 1).partition(".")
        name = GGUF_CONFIG_MAPPING.get(prefix, {}).get(field)
        value = _plain(raw)
        if name not in (None, -1, "model_type") and value is not None:
            entries[name] = (value, key)
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if "vocab_size" not in entries and isinstance(tokens, GgufArray):
        entries["vocab_size"] = (tokens.count, "tokenizer.ggml.tokens")
    return entries


def _check_required(header: GgufHeader) -> None:
    """The layer count and width are stated, not left to transformers' defaults (a Llama
    config without them means 32 layers, 4,096 wide)."""
    from transformers.integrations import GGUF_CONFIG_MAPPING

    fields = GGUF_CONFIG_MAPPING.get(_renamed_architecture(header), {})
    for field in REQUIRED:
        key = f"{header.architecture}.{field}"
        if field in fields and key not in header.metadata:
            raise ValueError(f"{header.path}: no metadata {key!r}; a model file states its "
                             "layer count and width")


def _check_values(header: GgufHeader, entries: dict) -> None:
    """Size fields positive integers within bounds; other numbers finite."""
    import math

    for name, (value, key) in entries.items():
        where = f"{header.path}: metadata {key!r}"
        if name in SIZE_FIELDS:
            check_size_value(value, where, name)
        elif isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} = {value!r}: expected a finite number")


def _check_blocks(header: GgufHeader, layers: int, key: str) -> None:
    """The blocks the tensors hold are exactly ``0 .. layers - 1``."""
    blocks = {int(m.group(1)) for t in header.tensors if (m := BLOCK.match(t.name))}
    if blocks == set(range(layers)):
        return
    beyond = sorted(b for b in blocks if b >= layers)
    held = f"blocks {min(blocks)} to {max(blocks)}" if blocks else "no block tensors"
    detail = f"a tensor of block {beyond[0]}" if beyond else \
        f"tensors for {len(blocks)} blocks ({held})"
    raise ValueError(f"{header.path}: metadata {key!r} = {layers:,}, but the file holds "
                     f"{detail}: a false layer count, or a truncated model")


def _check_tokenizer(header: GgufHeader) -> None:
    """The arrays the tokenizer is built from: present, of the right type, counts agreeing,
    and no token id beyond the embedding's rows."""
    tokens = header.metadata.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, GgufArray) or not tokens.count:
        raise ValueError(f"{header.path}: no metadata 'tokenizer.ggml.tokens' (the vocabulary "
                         "the tokenizer is built from)")
    for key, item_type in TOKENIZER_ARRAYS.items():
        value = header.metadata.get(key)
        if value is None:
            continue
        if not isinstance(value, GgufArray) or value.item_type != item_type:
            raise ValueError(f"{header.path}: metadata {key!r} must be an array of "
                             f"{item_type} items")
        if key != "tokenizer.ggml.merges" and value.count != tokens.count:
            raise ValueError(f"{header.path}: metadata {key!r} has {value.count:,} items, "
                             f"but 'tokenizer.ggml.tokens' has {tokens.count:,}")
    embedding = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embedding is not None and tokens.count > embedding.shape[0]:
        raise ValueError(f"{header.path}: metadata 'tokenizer.ggml.tokens' lists "
                         f"{tokens.count:,} tokens, but 'token_embd.weight' has only "
                         f"{embedding.shape[0]:,} rows (ids past them index nothing)")


def _config_values(header: GgufHeader, entries: dict) -> dict:
    """The keyword arguments of the transformers config, with transformers' own fix-ups
    (LFM2 states its key-value heads per layer; the config takes the largest)."""
    values = {name: value for name, (value, _) in entries.items()}
    values.update(_from_tensors(header))
    heads = values.get("num_key_value_heads")
    if values["model_type"] == "lfm2" and isinstance(heads, list):
        values.update(num_key_value_heads=max(heads), block_auto_adjust_ff_dim=False,
                      full_attn_idxs=[i for i, n in enumerate(heads) if n > 0])
    return values


def _described(header: GgufHeader, entries: dict) -> str:
    sizes = ", ".join(f"{key} = {value}" for name, (value, key) in entries.items()
                      if name in SIZE_FIELDS and not isinstance(value, list))
    return f"its metadata describes ({sizes})"


def _gguf_names(model, kind: str, layers: int, path) -> dict[str, str]:
    """GGUF tensor name -> the model's name for it, as transformers maps them (its
    ``get_gguf_hf_weights_map``, with the gguf package's name table built once, not once
    per submodule): a name is tried whole, then without its leading module names."""
    import gguf

    arch_name = GGUF_ARCH_NAMES.get(kind, kind)
    arch = next((k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch_name), None)
    if arch is None:
        raise ValueError(f"{path}: the gguf package has no tensor names for architecture "
                         f"{arch_name!r}")
    table = gguf.get_tensor_name_map(arch, layers)
    names = list(model.state_dict())
    found: dict[str, str] = {}
    for depth in range(max((n.count(".") for n in names), default=0) + 1):
        for name in names:
            parts = name.split(".")
            if depth >= len(parts) - 1:
                continue
            base, suffix = ".".join(parts[depth:-1]), parts[-1]
            if suffix not in ("weight", "bias"):
                base, suffix = ".".join(parts[depth:]), ""
            mapped = table.get_name(base)
            if mapped is not None:
                found.setdefault(mapped + (f".{suffix}" if suffix else ""), name)
    return found


def _compare(header: GgufHeader, model, kind: str, described: str) -> None:
    """Each tensor's element count against the model's; no model tensor missing."""
    import math

    to_model = _gguf_names(model, kind, model.config.num_hidden_layers, header.path)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = {g: shapes[h] for g, h in to_model.items() if "experts." not in h}
    held = {t.name: t.shape for t in header.tensors}
    check_shapes(held, expected, str(header.path), described,
                 same=lambda a, b: math.prod(a) == math.prod(b))
    params = {n for n, _ in model.named_parameters() if "experts." not in n}
    missing = [g for g, h in to_model.items() if h in params and g not in held]
    check_missing(missing, expected, str(header.path), described)


def _layer_count(header: GgufHeader, entries: dict, config) -> tuple[int, str]:
    """The config's layer count and the metadata key it came from."""
    key = next((key for name, (_, key) in entries.items() if name in
                ("num_hidden_layers", "n_layer")), f"{header.architecture}.block_count")
    layers = getattr(config, "num_hidden_layers", None)
    if not isinstance(layers, int) or isinstance(layers, bool):
        raise ValueError(f"{header.path}: metadata {key!r} does not give a layer count "
                         f"(got {layers!r})")
    return layers, key


def check_gguf_model(header: GgufHeader) -> dict:
    """Check the model the metadata describes against the tensors, and the conversion's
    memory; return ``{"model_type", "elements"}``."""
    import transformers

    kind = check_causal(header)
    _check_required(header)
    entries = config_entries(header, kind)
    _check_values(header, entries)
    values = _config_values(header, entries)
    config = meta_model(lambda: transformers.AutoConfig.for_model(**values), str(header.path))
    _check_blocks(header, *_layer_count(header, entries, config))
    _check_tokenizer(header)
    model = meta_model(lambda: transformers.AutoModelForCausalLM.from_config(config),
                       str(header.path))
    _compare(header, model, kind, _described(header, entries))
    elements = element_count(model)
    check_model_fits(f"converting {header.path} to fp32", elements, CONVERSION_COPIES,
                     "free memory, or convert a smaller model")
    return {"model_type": kind, "elements": elements}


__all__ = ["CONVERSION_COPIES", "check_causal", "check_gguf_model", "config_entries",
           "model_type"]
