"""A user's own decoder LLM in a recipe: a local Hugging Face folder or a GGUF file, and the
text it is judged on, tokenized with the model's own tokenizer.

::

    [model]
    build = "edgepack.zoo.hf_decoder:hf_decoder"
    args = { folder = "models/qwen2-0.5b" }          # or { gguf = "models/model.Q4_K_M.gguf" }

    [data]
    provider = "edgepack.zoo.hf_decoder:hf_text"
    args = { folder = "models/qwen2-0.5b", eval_windows = 16, window_tokens = 128 }

The folder is what ``save_pretrained`` writes: ``config.json``, safetensors weights and the
tokenizer (``tokenizer.json``, which onnxruntime-genai needs beside the deployed model).
Nothing is downloaded and no code from the folder runs (no ``trust_remote_code``, no pickle).
A GGUF file is converted once to such a folder and cached (:mod:`edgepack.export.gguf`).

The text: the offline English corpus (:mod:`edgepack.zoo.text_corpus`), or a UTF-8 text file
of the user's (``text_file``, one passage per line; the last fifth of its lines are held
out). Held-out windows come from the evaluation split only, never calibrated on; each split
is tokenized as one stream and cut into non-overlapping windows of ``window_tokens``.
"""

from __future__ import annotations

from pathlib import Path

# Fixed prompts for greedy agreement: plain English openings a model continues sensibly.
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
HELD_OUT_SHARE = 5   # a text file's last 1/5 of lines are the evaluation split


def model_folder(folder: str = "", gguf: str = "") -> Path:
    """The local Hugging Face folder to load: ``folder`` as given (checked), or the folder
    converted from ``gguf`` (cached); exactly one of the two."""
    if bool(folder) == bool(gguf):
        raise ValueError("hf_decoder: give exactly one of folder (a local Hugging Face "
                         "folder) or gguf (a GGUF file)")
    if gguf:
        from edgepack.pipeline.teacher import cache_dir
        from edgepack.export.gguf import cached_hf_folder

        return cached_hf_folder(Path(gguf), cache_dir() / "models")
    from edgepack.export.hf import check_local_model_dir

    return check_local_model_dir(folder)


def hf_decoder(folder: str = "", gguf: str = ""):
    """The recipe builder: the decoder in ``folder`` (or converted from ``gguf``) as an fp32
    transformers causal LM in eval mode, from safetensors only."""
    from transformers import AutoModelForCausalLM

    path = model_folder(folder, gguf)
    return AutoModelForCausalLM.from_pretrained(
        str(path), local_files_only=True, use_safetensors=True, trust_remote_code=False,
        dtype="float32").eval()


def _tokenizer(path: Path):
    from tokenizers import Tokenizer

    file = path / "tokenizer.json"
    if not file.is_file():
        raise ValueError(f"{path} holds no tokenizer.json: the text is tokenized with the "
                         f"model's own tokenizer, and onnxruntime-genai needs it beside the "
                         f"deployed model (save it with tokenizer.save_pretrained(folder))")
    return Tokenizer.from_file(str(file))


def _text_splits(text_file: str) -> dict[str, list[str]]:
    """{"train", "evaluation"}: the offline corpus, or the lines of a UTF-8 text file."""
    if not text_file:
        from edgepack.zoo.text_corpus import english_corpus

        return english_corpus()
    try:
        lines = [ln.strip() for ln in Path(text_file).read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise ValueError(f"hf_text: text_file {text_file} is not UTF-8 text ({exc.reason} at "
                         f"byte {exc.start})") from exc
    except OSError as exc:
        raise ValueError(f"hf_text: text_file {text_file} cannot be read ({exc.strerror})") \
            from exc
    lines = [ln for ln in lines if ln]
    held = len(lines) // HELD_OUT_SHARE
    if held < 1:
        raise ValueError(f"hf_text: text_file {text_file} has {len(lines)} non-empty lines; "
                         f"at least {HELD_OUT_SHARE} are needed (the last fifth is held out)")
    return {"train": lines[:-held], "evaluation": lines[-held:]}


def _stream(tokenizer, sentences: list[str]) -> list[int]:
    return tokenizer.encode(" ".join(sentences), add_special_tokens=False).ids


def _windows(tokens: list[int], length: int, count: int, split: str) -> list[list[int]]:
    windows = [tokens[i:i + length] for i in range(0, len(tokens) - length + 1, length)]
    if len(windows) < count:
        raise ValueError(f"the text's {split} split gives {len(windows)} windows of {length} "
                         f"tokens; {count} asked for")
    return windows[:count]


def _check_counts(eval_windows, calibration_windows, train_windows, window_tokens,
                  prompts) -> None:
    for name, value, low in (("eval_windows", eval_windows, 1),
                             ("calibration_windows", calibration_windows, 1),
                             ("train_windows", train_windows, 0),
                             ("window_tokens", window_tokens, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= 100_000:
            raise ValueError(f"hf_text: {name} must be an integer in [{low}, 100000], got "
                             f"{value!r}")
    if isinstance(prompts, bool) or not isinstance(prompts, int) or \
            not 1 <= prompts <= len(PROMPTS):
        raise ValueError(f"hf_text: prompts must be in [1, {len(PROMPTS)}], got {prompts!r}")


def hf_text(folder: str = "", gguf: str = "", eval_windows: int = 16,
            calibration_windows: int = 8, train_windows: int = 64, window_tokens: int = 128,
            prompts: int = len(PROMPTS), text_file: str = "") -> dict:
    """The recipe's data provider: token windows of the text, tokenized with the model's own
    tokenizer, and fixed prompts.

    Returns ``{"train", "calibration", "evaluation"}`` (lists of token-id windows; evaluation
    from the held-out split only), ``"prompts"`` (token ids of :data:`PROMPTS`) and
    ``"tokenizer_dir"`` (the folder with ``tokenizer.json``)."""
    _check_counts(eval_windows, calibration_windows, train_windows, window_tokens, prompts)
    path = model_folder(folder, gguf)
    tokenizer = _tokenizer(path)
    splits = _text_splits(text_file)
    held_out = _windows(_stream(tokenizer, splits["evaluation"]), window_tokens, eval_windows,
                        "evaluation")
    train = _windows(_stream(tokenizer, splits["train"]), window_tokens,
                     calibration_windows + train_windows, "train")
    return {"train": train[calibration_windows:], "calibration": train[:calibration_windows],
            "evaluation": held_out,
            "prompts": [tokenizer.encode(p, add_special_tokens=False).ids
                        for p in PROMPTS[:prompts]],
            "tokenizer_dir": str(path)}


__all__ = ["PROMPTS", "hf_decoder", "hf_text", "model_folder"]
