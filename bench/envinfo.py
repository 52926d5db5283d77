"""The machine a number came from: versions, execution providers, CPU model and flags."""

from __future__ import annotations

import os
import platform
from functools import lru_cache

INTERESTING_FLAGS = ("avx", "avx2", "avx512f", "avx512_vnni", "avx512vnni", "avx_vnni",
                     "amx_tile", "amx_int8", "amx_bf16", "fma", "f16c", "sse4_2",
                     "neon", "asimd", "asimddp", "sve", "i8mm", "bf16")


@lru_cache(maxsize=1)
def cpu_info() -> dict:
    """CPU brand, architecture, logical cores and the SIMD flags that decide int8 speed."""
    try:
        import cpuinfo

        info = cpuinfo.get_cpu_info()
        brand = info.get("brand_raw", "") or platform.processor()
        flags = info.get("flags", [])
    except Exception:  # cpuinfo can fail on unusual machines; the rest still helps
        brand, flags = platform.processor(), []
    return {"cpu": brand or "unknown", "arch": platform.machine(),
            "logical_cores": os.cpu_count() or 0,
            "flags": sorted(f for f in flags if f in INTERESTING_FLAGS)}


ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu")


def package_version(name: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment() -> dict:
    """Versions and providers, as recorded in every report."""
    try:
        import onnxruntime as ort

        ort_version, providers = ort.__version__, ort.get_available_providers()
        device = ort.get_device()
    except ImportError:
        ort_version, providers, device = "not installed", [], "none"
    import onnx
    import torch

    cpu = cpu_info()
    installed = [name for name in ORT_PACKAGES if package_version(name) != "not installed"]
    ort_package = " and ".join(installed) or "not installed"
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort_version,
        "onnxruntime_package": ort_package,
        # Both packages install the module `onnxruntime`: one silently overwrites the other.
        "onnxruntime_conflict": len(installed) > 1,
        "onnxruntime_device": device,
        "providers": providers,
        "cuda_available_to_torch": bool(torch.cuda.is_available()),
        "gpus": gpu_names(),
        **cpu,
    }


def gpu_names() -> list[str]:
    """The NVIDIA GPUs the driver lists (none without a driver), for the report's
    "measured on" line: a CUDA figure without the GPU's name is not reproducible."""
    from edgepack.bench.memory import GpuMemory

    gpu = GpuMemory.open()
    return gpu.names() if gpu is not None else []
