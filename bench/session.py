"""ONNX Runtime sessions on the execution provider that was asked for, and no other.

Asking for CUDA on a machine without it must be an error, never a silent CPU run:
:func:`make_session` checks the provider is available before creating the session, reads
``session.get_providers()`` after, and raises :class:`ProviderError` naming what is missing.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path

from export.onnx_checks import check_onnx_file

PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "xnnpack": "XnnpackExecutionProvider",
    "qnn": "QNNExecutionProvider",
    "dml": "DmlExecutionProvider",
}

GRAPH_OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "all")


class ProviderError(ValueError):
    """A requested execution provider is not available (bad input: exit code 2)."""


@dataclass
class SessionOptions:
    """The session controls that matter on edge devices."""

    provider: str = "cpu"
    threads: int = 1                 # intra-op threads; 0 lets ONNX Runtime choose
    inter_op_threads: int = 1
    sequential: bool = True          # ORT_SEQUENTIAL execution mode
    spin_wait: bool = True           # allow_spinning; off saves power on devices
    graph_optimization: str = "all"
    no_cpu_fallback: bool = False    # session.disable_cpu_ep_fallback


def provider_name(name: str) -> str:
    """Map 'cpu'/'cuda'/... to ONNX Runtime's provider name; full names pass through."""
    import onnxruntime as ort

    if name.lower() in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[name.lower()]
    known = set(ort.get_all_providers()) if hasattr(ort, "get_all_providers") else set()
    if name in known or name.endswith("ExecutionProvider"):
        if known and name not in known:
            raise ProviderError(f"unknown execution provider {name!r}; ONNX Runtime knows "
                                f"{', '.join(sorted(known))}")
        return name
    close = difflib.get_close_matches(name.lower(), list(PROVIDER_ALIASES), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ProviderError(f"unknown execution provider {name!r}; expected one of "
                        f"{', '.join(PROVIDER_ALIASES)} or a full ONNX Runtime provider name"
                        f"{hint}")


def _missing_provider_message(full: str, available: list[str]) -> str:
    import onnxruntime as ort

    hint = ""
    if full == "CUDAExecutionProvider":
        package = "onnxruntime-gpu" if "gpu" not in (ort.get_device() or "").lower() else ""
        hint = ("; install onnxruntime-gpu (pip install 'edgepack[gpu]', never beside "
                "onnxruntime) and an NVIDIA driver with CUDA" if package else
                "; onnxruntime-gpu is installed but CUDA could not be loaded "
                "(check the NVIDIA driver, CUDA and cuDNN libraries)")
    return (f"execution provider {full} is not available (available: "
            f"{', '.join(available)}){hint}")


def make_session(path: str | os.PathLike, options: SessionOptions | None = None):
    """Create an InferenceSession on exactly the requested provider; check the file first."""
    import onnxruntime as ort

    options = options or SessionOptions()
    full = provider_name(options.provider)
    available = ort.get_available_providers()
    if full not in available:
        raise ProviderError(_missing_provider_message(full, available))
    check_onnx_file(path)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.intra_op_num_threads = max(0, options.threads)
    so.inter_op_num_threads = max(0, options.inter_op_threads)
    so.execution_mode = (ort.ExecutionMode.ORT_SEQUENTIAL if options.sequential
                         else ort.ExecutionMode.ORT_PARALLEL)
    levels = {"disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
              "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
              "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
              "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}
    so.graph_optimization_level = levels[options.graph_optimization]
    if not options.spin_wait:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    if options.no_cpu_fallback:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    providers = [full] if full == "CPUExecutionProvider" else [full, "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(Path(path)), sess_options=so, providers=providers)
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(f"ONNX Runtime could not load {path} on {full}: {first}") from exc
    if full not in session.get_providers():
        raise ProviderError(_missing_provider_message(full, session.get_providers()))
    return session
