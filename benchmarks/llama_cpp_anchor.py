"""llama.cpp as an anchor: GGUF files of a Hugging Face folder, and a decoder that reads them
through llama-cpp-python with the interface of :class:`edgepack.bench.decoder.Decoder`, so the
side-by-side benchmark times and scores llama.cpp in the same loop as every ONNX model.

llama-cpp-python compiles llama.cpp from its sdist (about 10-15 minutes on 2 cores). Build it
with AMX off: its AMX path crashes on Xeon-class CPUs (ggml-org/llama.cpp#20824)::

    python3 -m venv /tmp/llama
    CMAKE_ARGS="-DGGML_AMX=OFF -DGGML_NATIVE=ON" /tmp/llama/bin/pip install llama-cpp-python

Making the GGUF files (llama.cpp's own ``convert_hf_to_gguf.py``, from the same sdist's
``vendor/llama.cpp``, run by a Python with torch, transformers and sentencepiece; then
llama.cpp's quantizer)::

    python benchmarks/llama_cpp_anchor.py HF_FOLDER OUT_DIR --convert vendor/llama.cpp/convert_hf_to_gguf.py \
        --convert-python /tmp/genai/bin/python --llama-python /tmp/llama/bin/python

writes ``OUT_DIR/f32.gguf`` and ``Q4_0``, ``Q4_1``, ``Q8_0`` beside it (llama.cpp's default
choices for the token embedding of each type).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

GGUF_TYPES = ("Q4_0", "Q4_1", "Q8_0")

_QUANTIZE = """
import sys, llama_cpp
source, out, kind = sys.argv[1:4]
params = llama_cpp.llama_model_quantize_default_params()
params.ftype = getattr(llama_cpp, "LLAMA_FTYPE_MOSTLY_" + kind)
params.allow_requantize = True
sys.exit(llama_cpp.llama_model_quantize(source.encode(), out.encode(), params))
"""


def make_ggufs(hf_folder: Path, out: Path, convert: Path, convert_python: str,
               llama_python: str, types=GGUF_TYPES) -> dict[str, Path]:
    """``hf_folder`` in llama.cpp's formats: an f32 GGUF by its converter, then each of
    ``types`` by its quantizer. Returns {type: path}; a step that fails raises with its
    last line of output."""
    out.mkdir(parents=True, exist_ok=True)
    f32 = out / "f32.gguf"
    env = {**os.environ, "PYTHONPATH": str(convert.parent / "gguf-py"), "HF_HUB_OFFLINE": "1"}
    _run([convert_python, str(convert), str(hf_folder), "--outtype", "f32", "--outfile",
          str(f32)], env, "convert_hf_to_gguf.py")
    made = {}
    for kind in types:
        made[kind] = out / f"{kind}.gguf"
        _run([llama_python, "-c", _QUANTIZE, str(f32), str(made[kind]), kind], None,
             f"llama.cpp's quantizer ({kind})")
    return made


def _run(command: list[str], env, what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {tail[0][:300]}")


class _Runtime:
    """What the generation figures read from an ONNX Runtime session: the provider's name
    and the thread count."""

    def __init__(self, threads: int):
        self.intra_op_num_threads = threads

    def get_providers(self) -> list[str]:
        return ["llama.cpp CPU"]

    def get_session_options(self):
        return self


class LlamaCppDecoder:
    """A GGUF file through llama.cpp, with :class:`edgepack.bench.decoder.Decoder`'s
    interface: ``forward(token_ids, cache)`` gives one row of logits per new token and the
    grown cache. The cache is the list of tokens llama.cpp's own KV cache holds (one
    sequence); a ``forward`` after another prefix re-reads that prefix first. Every logit
    row of a prefill is computed (``logits_all``), as the ONNX decoders do."""

    def __init__(self, gguf: str | os.PathLike, threads: int = 1, context: int = 2048):
        from llama_cpp import Llama

        self.path = Path(gguf)
        self.llm = Llama(model_path=str(self.path), n_ctx=context, n_batch=context,
                         n_ubatch=context, n_threads=threads, n_threads_batch=threads,
                         logits_all=True, verbose=False)
        self.session = _Runtime(threads)
        self.context_length = context
        self.vocab_size = int(self.llm.n_vocab())
        self.load_memory = None
        self._held: list[int] = []

    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def empty_cache(self) -> list[int]:
        return []

    def forward(self, token_ids, cache: list[int]) -> tuple[np.ndarray, list[int]]:
        tokens = [int(t) for t in np.asarray(token_ids).reshape(-1)]
        if list(cache) != self._held:          # another prefix: start again from it
            self.llm.reset()
            self._held = []
            if cache:
                self.llm.eval(list(cache))
                self._held = list(cache)
        start = len(self._held)
        self.llm.eval(tokens)
        self._held = self._held + tokens
        logits = np.array(self.llm.scores[start:start + len(tokens)], dtype=np.float32)
        return logits, list(self._held)

    def sequence_logits(self, token_ids) -> np.ndarray:
        logits, _ = self.forward(token_ids, self.empty_cache())
        return logits

    def check_logits(self, logits: np.ndarray, step: int) -> None:
        if not np.isfinite(logits).all():
            raise RuntimeError(f"{self.path}: llama.cpp's logits hold NaN or Inf (step {step})")

    def greedy(self, prompt_ids, max_new_tokens: int, eos_ids=(), check_logits: bool = False):
        logits, cache = self.forward(prompt_ids, self.empty_cache())
        for step in range(max_new_tokens):
            token = int(np.argmax(logits[-1]))
            yield token
            if token in eos_ids:
                return
            logits, cache = self.forward([token], cache)


def main() -> int:
    parser = argparse.ArgumentParser(description="GGUF files of a Hugging Face folder")
    parser.add_argument("hf_folder", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--convert", type=Path, required=True,
                        help="llama.cpp's convert_hf_to_gguf.py (its gguf-py beside it)")
    parser.add_argument("--convert-python", default=sys.executable)
    parser.add_argument("--llama-python", default=sys.executable)
    args = parser.parse_args()
    for kind, path in make_ggufs(args.hf_folder, args.out, args.convert, args.convert_python,
                                 args.llama_python).items():
        print(f"{kind}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
