"""Quantization methods: one file each, registered where it is defined.

A method is a small settings dataclass (only its own fields) and a :class:`MethodSpec`: how
to quantize a prepared graph into a file, how to resolve its machine-dependent settings, how
to describe them in one line, and what kind of model it produces. :data:`METHODS` finds
every module of this package, so a new method is one new file; an unknown name is an error
that lists the registered ones. The quantize stage (:mod:`edgepack.compress.quantize.quantizer`) runs
the chosen method and then the same output and speed checks for all of them.

Example: a new method, dynamic int8 with one scale per weight tensor (a file of this
package, ``int8_per_tensor.py``)::

    @dataclass
    class PerTensorInt8:
        reduce_range: bool = option(False, "7-bit weights")

    def quantize_per_tensor(prepared, target, settings, job):
        from onnxruntime.quantization import QuantType, quantize_dynamic
        quantize_dynamic(str(prepared), str(target), per_channel=False,
                         reduce_range=settings.reduce_range, weight_type=QuantType.QInt8,
                         nodes_to_exclude=job.exclude)

    METHODS.register(MethodSpec("int8-per-tensor", PerTensorInt8, quantize_per_tensor,
                                describe=lambda s: "one scale per tensor", produces="int8"))

``edgepack quantize m.onnx -o q.onnx --mode int8-per-tensor`` then runs it, checked like the
rest.
"""

from __future__ import annotations

import contextlib
import logging

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgepack.core.registry import Registry

PRODUCES = ("int8", "float16", "int4")


@dataclass
class QuantizeJob:
    """What a method works from besides its settings: calibration feeds, the nodes kept in
    float (``exclude``), and, when given, the only nodes to quantize (``include``)."""

    feeds: list = field(default_factory=list)
    exclude: list = field(default_factory=list)
    include: list | None = None


def _as_asked(settings, provider: str):
    return settings, ""


def _no_causes(settings, transformer: bool) -> list[str]:
    return []


@dataclass(frozen=True)
class MethodSpec:
    """How one method joins the quantize stage.

    - ``quantize(prepared, target, settings, job)`` writes the quantized graph to ``target``;
    - ``describe(settings)``: one line of the (resolved) settings, for the command line;
    - ``produces``: ``int8``, ``float16`` or ``int4`` (what the file holds);
    - ``resolve(settings, provider)``: (the settings this machine runs, why), e.g. a preset;
    - ``needs_calibration``: it reads calibration data (static int8), or a function of its
      settings saying whether they do (int4: its algorithm's own word); ask
      :meth:`reads_calibration`;
    - ``repairable``: node-level int8 choices apply (accuracy-aware and latency-aware float
      nodes, transformer fusions first); ``quantizable_ops()`` are the ops it quantizes;
    - ``scope(model, transformer)``: (the only nodes to quantize or None, a record);
    - ``rival(settings, transformer)``: (method, settings) the result must also beat, e.g.
      dynamic int8 for static int8 on a transformer; None when there is none;
    - ``likely_causes(settings, transformer)``: why a result may have failed its check;
    - ``fallbacks(settings, has_calibration)``: the next candidates, cheapest first, when the
      first fails its output check: ``(label, method, settings, accuracy_aware)`` each
      (:mod:`edgepack.compress.quantize.candidate_search`); None: no search;
    - ``label``: the name in messages ("static int8"; the name when empty).
    """

    name: str
    settings: type | None
    quantize: Callable[[Path, Path, Any, QuantizeJob], None]
    describe: Callable[[Any], str]
    produces: str
    resolve: Callable[[Any, str], tuple[Any, str]] = _as_asked
    needs_calibration: bool | Callable[[Any], bool] = False
    repairable: bool = False
    quantizable_ops: Callable[[], set[str]] | None = None
    scope: Callable[[Any, bool], tuple[list | None, dict]] | None = None
    rival: Callable[[Any, bool], tuple[str, Any] | None] | None = None
    likely_causes: Callable[[Any, bool], list[str]] = _no_causes
    fallbacks: Callable[[Any, bool], list[tuple]] | None = None
    order: int = 100
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.name

    def reads_calibration(self, settings) -> bool:
        """Whether quantizing with ``settings`` needs calibration data."""
        rule = self.needs_calibration
        return bool(rule(settings) if callable(rule) else rule)

    def __post_init__(self):
        if self.produces not in PRODUCES:
            raise ValueError(f"quantize method {self.name!r}: produces={self.produces!r}; "
                             f"expected one of {', '.join(PRODUCES)}")


METHODS: Registry[MethodSpec] = Registry("quantize method", __name__)


@contextlib.contextmanager
def _root_log_at_warning():
    """ONNX Runtime's quantizers log every node at INFO on the root logger, which importing
    its MatMulNBits quantizer configures to print INFO (logging.basicConfig): hundreds of
    lines per candidate. Only warnings and errors get through while a method runs."""
    root = logging.getLogger()
    previous = root.level
    root.setLevel(max(previous, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(previous)


def quantize_into(prepared: Path, target: Path, method: str, settings, feeds=(),
                  exclude=(), include=None) -> None:
    """Quantize the prepared model into ``target`` with ``method`` and its (resolved)
    ``settings``; ``exclude``: nodes kept in float; ``include``: the only nodes quantized."""
    from edgepack.bench.ir_version import lower_file_to_runtime

    from edgepack.core.onnx_files import check_onnx_file

    spec = METHODS.get(method)
    job = QuantizeJob(list(feeds), list(exclude), list(include) if include is not None else None)
    with _root_log_at_warning():
        spec.quantize(Path(prepared), Path(target), settings, job)
    lower_file_to_runtime(target)  # the quantizers stamp onnx's newest IR version
    try:
        check_onnx_file(target)
        _check_loads(target)
    except ValueError as exc:  # the method's own fault, not the user's: named as such
        reason = str(exc).replace(str(target), "its output").splitlines()[0]
        raise RuntimeError(f"quantize method {method!r} wrote a graph that is not valid "
                           f"ONNX ({reason})") from exc


def _check_loads(target: Path) -> None:
    """ONNX Runtime loads the written graph (its contrib operators' shape checks run only
    there: a GatherBlockQuantized whose zero points do not match its scales passes onnx's
    checker); ValueError with its message otherwise."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    try:
        ort.InferenceSession(str(target), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ONNX Runtime raises its own exception types
        raise ValueError(f"ONNX Runtime cannot load it: {str(exc).splitlines()[0][:300]}") \
            from exc


__all__ = ["METHODS", "MethodSpec", "QuantizeJob", "quantize_into"]
