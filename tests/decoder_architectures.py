"""Tiny random decoders of many Hugging Face model types, built from transformers' own
configs in seconds: the export, parity, onnxruntime-genai and int4 checks run on each.

Every model has 2 layers, 64 wide, 4 heads (2 key/value heads where the family has grouped
attention), head size 16 and the tiny tests' byte-level BPE tokenizer (320 tokens); weights
are drawn wide (``initializer_range`` 0.2) so greedy tokens have clear winners. Per family,
only what its config needs to be that small (GPT-2's names, GPT-J's rotary width, ...), and
the features worth exercising: sliding windows of 8 tokens (Mistral, Qwen2, Gemma2, Gemma3),
a tied embedding (Gemma3, GPT-2, Falcon, OPT), a short learned context (GPT-2, 48 positions).
"""

from __future__ import annotations

import shutil
from pathlib import Path

COMMON = dict(vocab_size=320, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
              initializer_range=0.2, bos_token_id=1, eos_token_id=2, pad_token_id=2)
WINDOW = 8          # the sliding window of the families that have one
GPT2_CONTEXT = 48   # GPT-2's learned positions (n_positions)

# model type -> what its config needs on top of COMMON
ARCHITECTURES = {
    "llama": {"tie_word_embeddings": True},
    "mistral": {"sliding_window": WINDOW},
    "qwen2": {"sliding_window": WINDOW, "use_sliding_window": True, "max_window_layers": 0},
    "qwen3": {"head_dim": 16},
    "phi3": {},
    "gemma": {"head_dim": 16},
    "gemma2": {"head_dim": 16, "sliding_window": WINDOW},
    "gemma3_text": {"head_dim": 16, "sliding_window": WINDOW},
    "gpt2": {"max_position_embeddings": GPT2_CONTEXT, "n_inner": 128},   # n_positions
    "gpt_neox": {},
    "opt": {"ffn_dim": 128, "word_embed_proj_dim": 64},
    "falcon": {},
    "stablelm": {},
    "granite": {},
    "olmo": {},
    "smollm3": {},
    "bloom": {},
    "gpt_bigcode": {"n_inner": 128},
    "gptj": {"rotary_dim": 8, "n_inner": 128},
    "phi": {"num_key_value_heads": 4},
}


def tiny_config(model_type: str):
    """The transformers config of the tiny ``model_type`` decoder."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**COMMON, **ARCHITECTURES[model_type]})


def tiny_model(model_type: str, seed: int = 0):
    """A randomly initialised causal LM of ``model_type`` (eval mode)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(model_type)).eval()


def make_architecture_folder(model_type: str, folder: Path, tokenizer_folder: Path,
                             seed: int = 0) -> Path:
    """A Hugging Face folder (config, safetensors, the tiny tokenizer) of ``model_type``."""
    folder = Path(folder)
    tiny_model(model_type, seed).save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(Path(tokenizer_folder) / name, folder / name)
    return folder


def transformers_greedy(folder: Path, prompt: list[int], new_tokens: int) -> list[int]:
    """transformers' own greedy tokens for the model in ``folder`` (its default cache:
    sliding layers keep only their window)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt),
                             dtype=torch.long), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=2)
    return out[0, len(prompt):].tolist()


def perturb_one_layer(model, layer: int, share: float = 0.01, seed: int = 0) -> None:
    """Add seeded noise of ``share`` (1%) of each weight's magnitude to one layer's MLP
    output projection, in place. Noise, not a scale: a norm after the MLP (Gemma's) would
    undo a uniform 1.01x almost exactly."""
    import torch

    weight = model.model.layers[layer].mlp.down_proj.weight
    with torch.no_grad():
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
        weight.add_(share * weight.abs() * noise)


__all__ = ["perturb_one_layer", "ARCHITECTURES", "GPT2_CONTEXT", "WINDOW", "make_architecture_folder", "tiny_config",
           "tiny_model", "transformers_greedy"]
