"""ONNX Runtime sessions on the execution provider that was asked for, and no other.

Asking for CUDA on a machine without it must be an error, never a silent CPU run:
:func:`make_session` checks the provider is available before creating the session, reads
``session.get_providers()`` after, and raises :class:`ProviderError` naming what is missing.
"""

from __future__ import annotations

import difflib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from edgepack.core.errors import BadInput
from edgepack.core.onnx_files import check_onnx_file

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


class ProviderError(BadInput):
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

    def __post_init__(self):
        if self.graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            close = difflib.get_close_matches(str(self.graph_optimization),
                                              GRAPH_OPTIMIZATION_LEVELS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"graph_optimization={self.graph_optimization!r} is not valid; "
                             f"expected one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}{hint}")
        if self.no_cpu_fallback and provider_name(self.provider) == "CPUExecutionProvider":
            raise ValueError("no_cpu_fallback forbids running nodes on the CPU as a fallback "
                             "from another provider; it needs a provider other than cpu")
        for name in ("threads", "inter_op_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0 (0: ONNX Runtime decides), "
                                 f"got {value!r}")


def provider_name(name: str) -> str:
    """Map 'cpu'/'cuda'/... to ONNX Runtime's provider name; full names pass through."""
    import onnxruntime as ort

    if name.lower() in PROVIDER_ALIASES:
        return PROVIDER_ALIASES[name.lower()]
    known = set(ort.get_all_providers()) if hasattr(ort, "get_all_providers") else set()
    if name in known or name.endswith("ExecutionProvider"):
        if known and name not in known:
            by_lower = {k.lower(): k for k in known}
            close = difflib.get_close_matches(name.lower(), sorted(by_lower), n=1)
            hint = f" (did you mean {by_lower[close[0]]!r}?)" if close else ""
            raise ProviderError(f"unknown execution provider {name!r}{hint}; ONNX Runtime "
                                f"knows {', '.join(sorted(known))}")
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


def require_provider(name: str) -> str:
    """The full provider name, if this ONNX Runtime can use it; else :class:`ProviderError`."""
    import onnxruntime as ort

    full = provider_name(name)
    available = ort.get_available_providers()
    if full not in available:
        raise ProviderError(_missing_provider_message(full, available))
    return full


def _ort_session_options(options: SessionOptions, profile_dir: str | None = None):
    import onnxruntime as ort

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
    so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if profile_dir is not None:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(profile_dir) / "profile")
    return so


def make_session(path: str | os.PathLike, options: SessionOptions | None = None,
                 profile_dir: str | None = None, check_file: bool = True):
    """Create an InferenceSession on exactly the requested provider; check the file first.

    ``check_file=False`` only for a caller that has just run
    :func:`edgepack.core.onnx_files.check_onnx_file` itself (to keep that out of a timing).

    CPU is listed after a non-CPU provider (it runs the nodes that provider cannot) unless
    ``no_cpu_fallback`` is set, in which case ONNX Runtime refuses such a model instead.
    """
    import onnxruntime as ort

    options = options or SessionOptions()
    full = require_provider(options.provider)
    if check_file:
        check_onnx_file(path)
    so = _ort_session_options(options, profile_dir)
    # Listing the CPU after another provider lets it take the nodes that provider cannot
    # run; with no_cpu_fallback ONNX Runtime must refuse such a model instead.
    alone = full == "CPUExecutionProvider" or options.no_cpu_fallback
    providers = [full] if alone else [full, "CPUExecutionProvider"]
    try:
        session = ort.InferenceSession(str(Path(path)), sess_options=so, providers=providers)
    except Exception as exc:
        raise ValueError(f"ONNX Runtime could not load {path} on {full}: "
                         f"{first_line(exc)}") from exc
    if full not in session.get_providers():
        raise ProviderError(_missing_provider_message(full, session.get_providers()))
    return session


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, without ONNX Runtime's status prefix."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(" : ", 2)[-1] if line.startswith("[ONNXRuntimeError]") else line


def run_failure(path: Path, feeds: dict, exc: Exception, what: str) -> ValueError:
    """The error for a model ONNX Runtime could not run on ``feeds``: the inputs' shapes, its
    first line, and how to fix symbolic dimensions."""
    shapes = ", ".join(f"{k}{list(v.shape)}" for k, v in feeds.items())
    return ValueError(f"ONNX Runtime could not {what} {path} with inputs {shapes}: "
                      f"{first_line(exc)} (set symbolic dimensions with --shape NAME=D1,D2)")


def nodes_per_provider(session, path: str | os.PathLike | None = None,
                       options: SessionOptions | None = None, feeds: dict | None = None
                       ) -> dict[str, int]:
    """How many nodes of the optimized graph each execution provider was assigned.

    Read from the session itself (``get_provider_graph_assignment_info``, recorded because
    :func:`make_session` turns it on). ONNX Runtime releases without that API get the count
    from one profiled run of a twin session (same options), which needs ``path``,
    ``options`` and ``feeds``.
    """
    if hasattr(session, "get_provider_graph_assignment_info"):
        counts: Counter = Counter()
        for subgraph in session.get_provider_graph_assignment_info():
            counts[subgraph.ep_name] += len(subgraph.get_nodes())
        if counts:
            return dict(counts)
    if path is None or feeds is None:
        return {}
    return _profiled_node_counts(path, options or SessionOptions(), feeds)


def _profiled_node_counts(path, options: SessionOptions, feeds: dict) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as tmp:
        twin = make_session(path, options, profile_dir=tmp)
        twin.run(None, feeds)
        events = json.loads(Path(twin.end_profiling()).read_text())
    nodes: dict[str, str] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            nodes[event["name"].rsplit("_kernel_time", 1)[0]] = args["provider"]
    return dict(Counter(nodes.values()))
