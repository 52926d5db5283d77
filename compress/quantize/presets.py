"""Target presets for int8, and ``--preset auto``: the settings for the machine at hand.

A preset fills the int8 settings a user left unset (``None``): graph format, activation
type, per-channel weights, reduce-range, symmetric activations. It is resolved when the
model is quantized (:func:`resolve_preset`), never when a config is made, so a config is a
plain value and the stage record shows both what was asked and what this machine chose.

What ONNX Runtime's kernels want, read from its CPU dispatch (MLAS ``platform.cpp``):

- x86-64: the fast integer GEMM and convolution kernels are U8S8 (uint8 activations times
  int8 weights) on SSE4.1, AVX2, AVX512 and both VNNI flavours (``VPDPBUSD`` *is* a u8 x s8
  dot product). S8S8 gets a fast kernel only with AVX-VNNI-INT8; elsewhere it is the slow
  path. Measured here (AMD EPYC, AVX2, 1 thread, interleaved): ResNet-18 static QDQ was 1.76x
  fp32 with U8S8 and 0.98x with S8S8; MobileNetV3-small 0.88x and 0.31x.
- Without VNNI the U8S8 kernels multiply with ``VPMADDUBSW``, whose 16-bit pair sums saturate
  with full 8-bit weights; 7-bit weights (reduce-range) avoid it. Measured here: ResNet-18's
  centred cosine to fp32 rose from 0.933 to 0.969 with reduce-range, at the same speed.
- ARM64 with dot-product instructions (SDOT/UDOT) has S8S8 and U8S8 kernels without
  saturation: S8S8, full 8-bit weights; without them, uint8 activations.
- GPU providers (CUDA, TensorRT): TensorRT's explicit quantization reads QDQ graphs with
  int8 and zero points of 0 (the ``gpu-tensorrt`` preset).

Per-channel weights everywhere: they cost nothing in speed and keep accuracy on layers with
uneven channel ranges (MiniLM dynamic: mean cosine 0.962 per-tensor, 0.992 per-channel).
"""

from __future__ import annotations

import platform
from functools import lru_cache

GPU_PROVIDER_WORDS = ("cuda", "tensorrt", "trt")

# What ONNX Runtime's kernels on each target want (sources and measurements above).
PRESETS: dict[str, dict] = {
    # x86-64 with VNNI (AVX512-VNNI / AVX-VNNI): VPDPBUSD multiplies u8 x s8 without the
    # 16-bit saturation of VPMADDUBSW: U8S8 with full 8-bit per-channel weights.
    "x86-vnni": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                 "reduce_range": False, "symmetric": False},
    # x86-64 with AMX-INT8 (Sapphire Rapids and later): MLAS's AMX QGEMM is U8S8 too (tiles
    # of u8 x s8 into s32, no saturation), falling back to AVX512-VNNI for small products.
    "x86-amx": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                "reduce_range": False, "symmetric": False},
    # x86-64 AVX2 / AVX512 without VNNI: U8S8 on VPMADDUBSW, whose 16-bit intermediate sums
    # can saturate; 7-bit weights (reduce_range) avoid it (ORT's guide says per-channel
    # "generally" needs reduce_range on these machines).
    "x86-avx2": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                 "reduce_range": True, "symmetric": False},
    # ARM64 with dot-product instructions (SDOT/UDOT): no saturation, S8S8 kernels exist:
    # S8S8 QDQ with full 8-bit per-channel weights.
    "arm64": {"format": "qdq", "activation_type": "int8", "per_channel": True,
              "reduce_range": False, "symmetric": False},
    # ARM64 without dot-product: MLAS's NEON kernels take uint8 activations.
    "arm64-nodot": {"format": "qdq", "activation_type": "uint8", "per_channel": True,
                    "reduce_range": False, "symmetric": False},
    # TensorRT (explicit quantization) reads QDQ graphs and needs int8 with zero points of 0:
    # symmetric activations and weights, per-channel weights; ORT on GPU supports only S8S8.
    "gpu-tensorrt": {"format": "qdq", "activation_type": "int8", "per_channel": True,
                     "reduce_range": False, "symmetric": True},
}
PRESET_CHOICES = ("auto", "none", "") + tuple(PRESETS)  # none and "": ONNX Runtime's defaults
PRESET_FALLBACKS = {"format": "qdq", "per_channel": False, "reduce_range": False,
                    "symmetric": False}


def _proc_cpuinfo_flags() -> set[str]:
    """CPU flags from /proc/cpuinfo (x86 ``flags``, ARM ``Features``); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags: /proc/cpuinfo, else py-cpuinfo (macOS, Windows)."""
    flags = _proc_cpuinfo_flags()
    if not flags:
        try:
            import cpuinfo

            flags = set(cpuinfo.get_cpu_info().get("flags", []))
        except Exception:  # py-cpuinfo fails on some machines; then no flags are known
            flags = set()
    return frozenset(f.lower() for f in flags)


def machine_arch() -> str:
    arch = platform.machine().lower()
    if arch in ("x86_64", "amd64", "i686", "x86"):
        return "x86_64"
    if arch in ("aarch64", "arm64", "armv8l"):
        return "arm64"
    return arch


def choose_preset(provider: str = "cpu", arch: str | None = None,
                  flags: frozenset[str] | set[str] | None = None) -> tuple[str, str]:
    """(preset name, why) for this provider and CPU."""
    arch = machine_arch() if arch is None else arch
    flags = cpu_flags() if flags is None else {f.lower() for f in flags}
    if any(word in provider.lower() for word in GPU_PROVIDER_WORDS):
        return "gpu-tensorrt", f"provider {provider}: QDQ int8 with zero points of 0"
    if arch == "x86_64":
        if {"amx_int8", "amx_tile"} <= flags:
            return "x86-amx", ("x86-64 with AMX-INT8: U8S8 on AMX tiles (VNNI for small "
                               "products), 8-bit per-channel weights")
        vnni = sorted(flags & {"avx512_vnni", "avx512vnni", "avx_vnni", "avxvnni"})
        if vnni:
            return "x86-vnni", (f"x86-64 with {vnni[0]}: U8S8 (u8 x s8 VNNI dot product), "
                                "8-bit per-channel weights")
        simd = "avx2" if "avx2" in flags else "no AVX2"
        return "x86-avx2", (f"x86-64 with {simd}, no VNNI: U8S8 on VPMADDUBSW, 7-bit "
                            "per-channel weights (reduce-range) against its 16-bit saturation")
    if arch == "arm64":
        if flags & {"asimddp", "dotprod"}:
            return "arm64", "ARM64 with dot-product (SDOT): S8S8, 8-bit per-channel weights"
        return "arm64-nodot", "ARM64 without dot-product: U8S8, 8-bit per-channel weights"
    return "x86-avx2", (f"unknown architecture {arch!r}: the conservative U8S8 settings, "
                        "7-bit per-channel weights")


def resolve_preset(preset: str, provider: str, gpu_ready: bool = True,
                   flags=None, arch: str | None = None) -> tuple[dict, str, str]:
    """(the preset's settings, its name, why ``auto`` chose it: "" otherwise).

    ``gpu_ready``: whether the method has a GPU preset (dynamic int8 has none: ONNX Runtime's
    CUDA provider runs its integer ops on the CPU, so ``auto`` picks the CPU's preset).
    """
    name, why = preset, ""
    if preset == "auto":
        name, why = choose_preset(provider, arch=arch, flags=flags)
        if name == "gpu-tensorrt" and not gpu_ready:
            name, why = choose_preset("cpu", arch=arch, flags=flags)
        why = f"{name} ({why})"
    return dict(PRESETS.get(name, {})), name, why
