"""The other kernel paths of this CPU: the same model run by torch and ONNX Runtime with
other instruction sets, to show that a correctness rule holds on each.

The libraries choose their kernels by the CPU's features at run time, and each has its own
switch:

- torch: ``ATEN_CPU_CAPABILITY`` (``default``, ``avx2``, ``avx512``: its vectorized
  operators), oneDNN's ``ONEDNN_MAX_CPU_ISA`` (``SSE41``, ``AVX2``, ``AVX512_CORE``...) and
  MKL's ``MKL_ENABLE_INSTRUCTIONS`` (``SSE4_2``, ``AVX2``, ``AVX512``: its GEMMs). They can
  only lower the instruction set, never raise it above the CPU's (:data:`TORCH_PATHS`).
- ONNX Runtime has no switch on x86: MLAS reads CPUID once. Its other paths are reached by
  faking the flags, running the process under ``qemu-x86_64`` with an older CPU model
  (:data:`EMULATED_CPUS`: ``Nehalem`` has SSE4.2 and no AVX, ``Haswell-noTSX`` AVX2 and FMA
  without AVX-512). qemu 7.2 emulates up to AVX2, so an AVX-512 or AMX path is reached only
  natively, on a CPU that has it.

:func:`run_decoder_steps` runs a decoder's prefill and decode steps in such a process (only
``numpy`` and ``onnxruntime`` are imported there: this file runs as a script) and returns
its logits and cache, for :func:`edgepack.export.decoder_parity.check_decoder_parity` to judge against torch.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TORCH_PATHS = {
    "torch default (no vectorized ATen kernels)": {"ATEN_CPU_CAPABILITY": "default"},
    "oneDNN SSE4.1, MKL SSE4.2": {"ONEDNN_MAX_CPU_ISA": "SSE41",
                                  "MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "torch AVX2, oneDNN AVX2, MKL AVX2": {"ATEN_CPU_CAPABILITY": "avx2",
                                          "ONEDNN_MAX_CPU_ISA": "AVX2",
                                          "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
EMULATED_CPUS = {"SSE4.2 (qemu Nehalem)": "Nehalem", "AVX2 (qemu Haswell-noTSX)": "Haswell-noTSX"}
QEMU = "qemu-x86_64-static"
STEPS_TIMEOUT_S = 900


def cpu_flags() -> set[str]:
    """This CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def qemu() -> str | None:
    """The qemu-x86_64 user-mode emulator's path, or None (Debian: qemu-user-static)."""
    return shutil.which(QEMU) or shutil.which("qemu-x86_64")


def run_decoder_steps(model_path, prompt, fed, *, qemu_cpu: str | None = None,
                      env: dict | None = None) -> tuple[list, list]:
    """The decoder at ``model_path`` run by ONNX Runtime in a child process: a prefill of
    ``prompt``, then one step per token of ``fed``; returns (the logits of each step, the
    cache after the last). ``qemu_cpu``: under qemu-x86_64 with that CPU model; ``env``:
    environment variables of the child."""
    import numpy as np

    command = [sys.executable, str(Path(__file__).resolve())]
    if qemu_cpu is not None:
        emulator = qemu()
        if emulator is None:
            raise ValueError(f"{QEMU} is not installed (Debian: apt-get install "
                             f"qemu-user-static)")
        command = [emulator, "-cpu", qemu_cpu] + command
    with tempfile.TemporaryDirectory(prefix="kernel-path.") as scratch:
        request = Path(scratch) / "request.json"
        out = Path(scratch) / "out.npz"
        request.write_text(json.dumps({"model": str(model_path), "prompt": list(map(int, prompt)),
                                       "fed": list(map(int, fed)), "out": str(out)}))
        done = subprocess.run(command + [str(request)], capture_output=True, text=True,
                              env={**os.environ, **(env or {})}, timeout=STEPS_TIMEOUT_S)
        if done.returncode != 0:
            raise RuntimeError(f"the decoder steps failed on {qemu_cpu or 'this CPU'}: "
                               f"{done.stderr.strip().splitlines()[-1:] or done.returncode}")
        arrays = np.load(out)
        logits = [arrays[f"logits.{i}"] for i in range(len(fed) + 1)]
        cache = [arrays[f"cache.{i}"] for i in range(int(arrays["cache_count"]))]
    return logits, cache


def _steps(request: dict) -> None:
    """The child's side: only numpy and onnxruntime, the names Optimum gives a decoder."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(request["model"], providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    past = sorted((n for n in inputs if n.startswith("past_key_values.")),
                  key=lambda n: (int(n.split(".")[1]), n.endswith("value")))
    first = inputs[past[0]].shape
    cache = [np.zeros((1, first[1], 0, first[3]), np.float32) for _ in past]
    names = ["logits"] + [n.replace("past_key_values.", "present.") for n in past]
    results = {}
    for step, ids in enumerate([request["prompt"]] + [[t] for t in request["fed"]]):
        start = cache[0].shape[2]
        total = start + len(ids)
        feeds = {"input_ids": np.asarray([ids], np.int64),
                 "attention_mask": np.ones((1, total), np.int64), **dict(zip(past, cache))}
        if "position_ids" in inputs:
            feeds["position_ids"] = np.arange(start, total, dtype=np.int64)[None]
        outputs = session.run(names, feeds)
        results[f"logits.{step}"] = outputs[0][0]
        cache = outputs[1:]
    results.update({f"cache.{i}": c for i, c in enumerate(cache)})
    np.savez(request["out"], cache_count=np.int64(len(cache)), **results)


if __name__ == "__main__":
    _steps(json.loads(Path(sys.argv[1]).read_text()))
