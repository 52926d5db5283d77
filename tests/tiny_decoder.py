"""A tiny Llama-style decoder for the test suite: random weights, its own small byte-level BPE
tokenizer, exported with KV cache by optimum-onnx (``text-generation-with-past``), in seconds.

Its weights are drawn wider than a trained model's (``initializer_range`` 0.2), so its logits
have clear winners and greedy decoding and top-1 agreement mean something on it.
"""

from __future__ import annotations

from pathlib import Path

TINY_TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "A model is small and fast when it runs on the device it was made for.",
    "Every stage is kept only if it is faster and still right.",
    "Weights are stored in blocks of thirty two values with one scale each.",
    "Python is a programming language that lets you work quickly.",
    "The cache holds the keys and values of every token seen so far.",
] * 8


def train_tiny_tokenizer(folder: Path, vocab_size: int = 320) -> Path:
    """A byte-level BPE tokenizer trained on :data:`TINY_TEXT`, saved as ``tokenizer.json``
    with a ``tokenizer_config.json`` (bos/eos ids 1 and 2) beside it."""
    import json

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size,
                                  special_tokens=["<unk>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TINY_TEXT, trainer)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
         "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 256}))
    return folder / "tokenizer.json"


def tiny_llama(vocab_size: int, seed: int = 0, layers: int = 2, hidden: int = 64,
               heads: int = 4, kv_heads: int = 2, intermediate: int = 128,
               max_positions: int = 256):
    """A randomly initialised LlamaForCausalLM with tied embedding / lm_head."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv_heads, max_position_embeddings=max_positions,
                         tie_word_embeddings=True, initializer_range=0.2, bos_token_id=1,
                         eos_token_id=2, pad_token_id=2)
    return LlamaForCausalLM(config).eval()


def make_tiny_decoder_folder(folder: Path, seed: int = 0, **sizes) -> Path:
    """A Hugging Face folder (config, safetensors weights, tokenizer) of a tiny decoder."""
    folder = Path(folder)
    train_tiny_tokenizer(folder)
    from tokenizers import Tokenizer

    vocab = Tokenizer.from_file(str(folder / "tokenizer.json")).get_vocab_size()
    tiny_llama(vocab, seed=seed, **sizes).save_pretrained(folder)
    return folder


def export_with_optimum(hf_folder: Path, out_folder: Path) -> Path:
    """Optimum's own ``text-generation-with-past`` export of ``hf_folder`` (the reference
    a user would have): returns ``out_folder/model.onnx``."""
    from optimum.exporters.onnx import main_export

    main_export(str(hf_folder), output=str(out_folder), task="text-generation-with-past",
                do_validation=False)
    return Path(out_folder) / "model.onnx"


def tiny_decoder_model(folder: str):
    """A recipe builder: the tiny decoder saved in ``folder`` (fp32, eval mode)."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).eval()


def tiny_decoder_text(folder: str, window_tokens: int = 24, eval_windows: int = 4,
                      calibration_windows: int = 2) -> dict:
    """A recipe data provider for the tiny decoder: token windows of :data:`TINY_TEXT`
    (evaluation from its second half), two prompts, and the tokenizer folder."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    half = len(TINY_TEXT) // 2
    stream = {split: tokenizer.encode(" ".join(text)).ids
              for split, text in (("train", TINY_TEXT[:half]), ("evaluation", TINY_TEXT[half:]))}

    def windows(split: str, count: int) -> list[list[int]]:
        tokens = stream[split]
        return [tokens[i * window_tokens:(i + 1) * window_tokens] for i in range(count)]

    return {"train": windows("train", 2), "calibration": windows("train", calibration_windows),
            "evaluation": windows("evaluation", eval_windows),
            "prompts": [tokenizer.encode("The quick brown").ids,
                        tokenizer.encode("Every stage is").ids],
            "tokenizer_dir": str(folder)}


def genai_greedy(folder, prompt: list[int], new_tokens: int, exact: bool = False) -> list[int]:
    """Greedy tokens of the model in ``folder`` through onnxruntime-genai (which reads the
    folder's genai_config.json), stopping after ``new_tokens`` or at its eos; ``exact``:
    exactly ``new_tokens`` (end of text suppressed, as transformers' ``min_new_tokens``)."""
    import onnxruntime_genai as og

    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    total = len(prompt) + new_tokens
    params.set_search_options(max_length=total, do_sample=False,
                              **({"min_length": total} if exact else {}))
    generator = og.Generator(model, params)
    generator.append_tokens([list(prompt)])
    tokens = []
    while not generator.is_done():
        generator.generate_next_token()
        tokens.append(int(generator.get_next_tokens()[0]))
    return tokens
