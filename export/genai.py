"""Deployment files beside a decoder: ``genai_config.json`` and the tokenizer, so that
onnxruntime-genai (PyPI ``onnxruntime-genai``) loads the folder as it is.

onnxruntime-genai's model builder writes ``genai_config.json`` only for the models it builds
itself; a decoder exported by Optimum (or by edgepack, which uses Optimum's names) gets none,
which is why users of their own models cannot run them there. The config needs little: the
graph's file name and input/output names (read from the graph, not assumed), the cache layout
(layers, KV heads, head size, from the past inputs' shapes), the context length (from
whichever field the model's family uses: ``max_position_embeddings``, GPT-2's
``n_positions``, ...) and the special tokens (from the model's ``config.json`` /
``generation_config.json``), and greedy search settings. Optimum's graphs return a cache one
token longer than they were given, so past and present never share a buffer
(``past_present_share_buffer = false``).

The model type is onnxruntime-genai's generic ``decoder``, whatever the architecture: the
graph already holds everything architecture-specific (rotary or learned positions, sliding
windows, scaled embeddings), and the runtime's named types are for its own builder's graphs
(it refuses gpt_neox, opt, falcon or stablelm by name, and its ``gpt2`` type expects other
inputs). The generic type runs every architecture the export accepts
(tests/export/test_decoder_architectures.py runs them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgepack.core.files import atomic_write_json

GENAI_CONFIG = "genai_config.json"
GENAI_MODEL_TYPE = "decoder"
DEFAULT_CONTEXT = 2048   # for a config.json that states none (written as such)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "generation_config.json", "config.json", "chat_template.jinja")


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _token_id(value):
    """config.json may give a list of eos ids: genai takes one id or a list."""
    return value if value is None or isinstance(value, int) else list(value)


def _first(config: dict, *keys):
    """The first positive integer among ``config``'s ``keys`` (families name fields
    differently: ``hidden_size``, ``n_embd``, ``d_model``), else None."""
    for key in keys:
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def genai_config(model_path: Path, hf_config: dict, generation: dict | None = None) -> dict:
    """The ``genai_config.json`` content for the decoder at ``model_path`` (batch 1, greedy)."""
    from edgepack.bench.decoder import context_from_config, decoder_layout
    from edgepack.bench.session import make_session

    session = make_session(model_path)
    layout = decoder_layout(session, model_path)
    names = {i.name for i in session.get_inputs()}
    generation = generation or {}
    inputs = {"input_ids": "input_ids", "attention_mask": "attention_mask",
              "past_key_names": "past_key_values.%d.key",
              "past_value_names": "past_key_values.%d.value"}
    if "position_ids" in names:
        inputs["position_ids"] = "position_ids"
    context = context_from_config(hf_config) or DEFAULT_CONTEXT
    heads = _first(hf_config, "num_attention_heads", "n_head", "n_heads", "num_heads") or \
        layout.kv_heads
    hidden = _first(hf_config, "hidden_size", "n_embd", "d_model") or heads * layout.head_dim
    eos = _token_id(generation.get("eos_token_id", hf_config.get("eos_token_id")))
    pad = generation.get("pad_token_id", hf_config.get("pad_token_id"))
    return {
        "model": {
            "bos_token_id": generation.get("bos_token_id", hf_config.get("bos_token_id")),
            "context_length": context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": model_path.name,
                "head_size": layout.head_dim,
                "hidden_size": hidden,
                "inputs": inputs,
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": heads,
                "num_hidden_layers": layout.layers,
                "num_key_value_heads": layout.kv_heads,
            },
            "eos_token_id": eos,
            "pad_token_id": pad if pad is not None else (eos if isinstance(eos, int) else
                                                         (eos or [0])[0]),
            "type": GENAI_MODEL_TYPE,
            "vocab_size": int(hf_config.get("vocab_size") or layout.vocab_size or 0),
        },
        "search": {"do_sample": False, "num_beams": 1, "max_length": context, "min_length": 0,
                   "early_stopping": True, "past_present_share_buffer": False,
                   "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0,
                   "length_penalty": 1.0, "no_repeat_ngram_size": 0, "diversity_penalty": 0.0,
                   "num_return_sequences": 1},
    }


def write_deploy_files(model_path, source_folder) -> list[str]:
    """Copy the tokenizer and config files from ``source_folder`` beside ``model_path`` and
    write ``genai_config.json``; return the names written. The model's folder must be its
    own (a stage folder or a fresh output folder): files of those names are replaced."""
    model_path, source_folder = Path(model_path), Path(source_folder)
    if not (source_folder / "tokenizer.json").is_file():
        raise ValueError(f"{source_folder} holds no tokenizer.json: onnxruntime-genai needs the "
                         f"tokenizer beside the model")
    written = []
    for name in TOKENIZER_FILES:
        source = source_folder / name
        target = model_path.parent / name
        if source.is_file() and source.resolve() != target.resolve():
            shutil.copyfile(source, target)
        if target.is_file():
            written.append(name)
    config = genai_config(model_path, _read_json(source_folder / "config.json"),
                          _read_json(source_folder / "generation_config.json"))
    atomic_write_json(model_path.parent / GENAI_CONFIG, config)
    return written + [GENAI_CONFIG]


__all__ = ["GENAI_CONFIG", "GENAI_MODEL_TYPE", "genai_config", "write_deploy_files"]
