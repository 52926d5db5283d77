"""Package an ONNX model for mobile and embedded ONNX Runtime builds.

A phone or microcontroller build of ONNX Runtime is usually a *minimal* build: it reads
only the ORT format (``.ort``, a flatbuffer that needs no protobuf parser) and holds only
the operator kernels the model uses. :func:`package_model` writes both things such a build
needs, using ONNX Runtime's own converter:

- ``model.ort``: the model in ORT format, with graph optimizations applied;
- ``required_operators.config``: the reduced-operator configuration that
  ``build.sh --include_ops_by_config`` reads (lines of ``domain;opset;op1,op2,...``);
- ``manifest.json`` (written last): sha256 and size of each file, opsets, inputs and
  outputs with shapes and types, the required operators and the parity numbers. It is
  marked ``"edgepack_package": true``: a folder holding any other manifest.json is the
  user's, and is refused rather than written over.

The ``.ort`` model is loaded back in ONNX Runtime and its outputs compared with the
``.onnx`` model's on generated inputs; a mismatch raises
:class:`~edgepack.export.parity.ParityError` (exit code 1) and nothing is written.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from edgepack.core.checks import check_number
from edgepack.core.files import (atomic_write_json, check_not_input, check_output_dir,
                                 output_folder, sha256_file)
from edgepack.core.onnx_files import check_inputs_and_outputs, check_onnx_file
from edgepack.core.output_paths import check_output_folder
from edgepack.core.stage import (StageConfig, StageInput, StageResult, StageSpec, option,
                                 register_stage)
from edgepack.export.arm64_check import DEFAULT_CPUS, Arm64CheckFailed
from edgepack.export.optimize import default_parity_feeds, unoptimized_session
from edgepack.export.parity import ParityError, compare_sessions

OPERATORS_CONFIG = "required_operators.config"
MANIFEST = "manifest.json"
PACKAGE_MARKER = "edgepack_package"


def _convert_to_ort(onnx_path: Path, work_dir: Path) -> tuple[Path, Path]:
    """Run ONNX Runtime's converter; return the .ort model and the operators config."""
    from onnxruntime.tools.convert_onnx_models_to_ort import (OptimizationStyle,
                                                              convert_onnx_models_to_ort)

    # The converter prints and logs progress; the caller reports the result instead.
    converter_log = logging.getLogger("ort_format_model.utils")
    level = converter_log.level
    converter_log.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(onnx_path, output_dir=work_dir,
                                       optimization_styles=[OptimizationStyle.Fixed])
    except Exception as exc:  # ONNX Runtime's load errors are not ValueErrors
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise ValueError(f"ONNX Runtime cannot load {onnx_path} to convert it "
                         f"({type(exc).__name__}: {text})") from exc
    finally:
        converter_log.setLevel(level)
    ort_model = work_dir / f"{onnx_path.stem}.ort"
    config = work_dir / f"{onnx_path.stem}.{OPERATORS_CONFIG}"
    if not ort_model.is_file() or not config.is_file():
        raise RuntimeError(f"ONNX Runtime's converter did not write {ort_model.name} and "
                           f"{config.name} for {onnx_path}")
    return ort_model, config


def read_operators_config(path: Path) -> dict[str, dict[str, list[str]]]:
    """Parse ``domain;opset;op1,op2`` lines into ``{domain: {opset: [ops]}}``."""
    operators: dict[str, dict[str, list[str]]] = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        domain, opset, ops = line.split(";", 2)
        names = sorted(op.split("{")[0] for op in ops.split(",") if op)
        operators.setdefault(domain, {})[opset] = names
    return operators


def _write_operators_config(source: Path, target: Path, model_name: str) -> None:
    """Copy the converter's config, naming the packaged model instead of a scratch path."""
    rules = [ln for ln in source.read_text().splitlines() if ln and not ln.startswith("#")]
    target.write_text(f"# Operators required by {model_name}\n" + "\n".join(rules) + "\n")


def _value_info(values) -> list[dict]:
    """Name, element type and shape (ints, or names of symbolic axes) of graph values."""
    import onnx

    out = []
    for value in values:
        tensor = value.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in tensor.shape.dim]
        out.append({"name": value.name,
                    "type": onnx.TensorProto.DataType.Name(tensor.elem_type).lower(),
                    "shape": shape})
    return out


QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")


def _reference_session(onnx_path: Path, graph):
    """The graph as written -- except a quantized (Q/DQ) graph.

    Run as written, a Q/DQ graph computes in float between its Q/DQ pairs; every deployed
    session, and the ``.ort`` file (saved after ORT's optimizations), fuses the pairs into
    int8 kernels that round differently, a quantization step apart. For those the reference
    is ONNX Runtime's own session of the same ``.onnx`` file, with the same optimizations:
    a conversion error still shows, the int8 rounding does not.
    """
    import onnxruntime as ort

    if any(node.op_type in QDQ_OPS for node in graph.graph.node):
        return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]), \
            "optimized (Q/DQ graph)"
    return unoptimized_session(onnx_path), "as written"


def _check_ort_parity(onnx_path: Path, ort_model: Path, graph, atol: float,
                      rtol: float) -> tuple[dict, list[dict], object]:
    """The parity record of the .ort model against the .onnx one, the feeds it used and
    the .ort model's session."""
    import onnxruntime as ort

    reference, kind = _reference_session(onnx_path, graph)
    candidate = ort.InferenceSession(str(ort_model), providers=["CPUExecutionProvider"])
    feeds = default_parity_feeds(reference, onnx_path)
    parity = compare_sessions(reference, candidate, feeds, atol, rtol)
    return {**parity, "reference": kind}, feeds, candidate


@dataclass(frozen=True)
class DeviceCheck:
    """An on-device check of the packaged model under emulation (:mod:`edgepack.export.arm64_check`):
    the userland it runs in, the emulated CPUs and the tolerance against this machine."""

    userland: object
    cpus: tuple[str, ...]
    atol: float = 1e-4
    rtol: float = 1e-3


def _check_on_arm64(ort_model: Path, here, feeds: list[dict], check: DeviceCheck) -> dict:
    """Run the .ort file here (session ``here``) and on aarch64 on the same inputs; the
    check's record."""
    from edgepack.export.arm64_check import check_arm64

    names = [o.name for o in here.get_outputs()]
    reference = [dict(zip(names, here.run(None, f))) for f in feeds]
    return check_arm64(ort_model, feeds, reference, check.userland, check.cpus,
                       atol=check.atol, rtol=check.rtol)


def _file_entry(path: Path) -> dict:
    return {"sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def is_package(folder: Path) -> bool:
    """Whether ``folder`` holds an edgepack package (its manifest is marked so)."""
    import json

    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get(PACKAGE_MARKER) is True


def check_package_folder(out_dir, onnx_path: Path, owned: bool = False) -> Path:
    """The output folder may be new or empty, or hold an earlier package; never the user's
    files. ``owned``: the folder is a pipeline stage's own (the run folder vouches for it)."""
    out_dir = check_output_dir(out_dir)
    for name in ("model.ort", OPERATORS_CONFIG, MANIFEST):
        check_not_input(out_dir / name, [onnx_path], "-o/--output")
    if (out_dir / MANIFEST).exists() and not is_package(out_dir):
        raise ValueError(f"output folder {out_dir} holds a {MANIFEST} that is not an "
                         "edgepack package manifest; choose another folder (edgepack "
                         "writes over its own package only)")
    if not owned:
        check_output_folder(out_dir, is_own=is_package, what="an edgepack package (no "
                            f"{MANIFEST} marked {PACKAGE_MARKER})")
    return out_dir


def package_model(onnx_path, out_dir, atol: float = 1e-4, rtol: float = 1e-3,
                  owned_folder: bool = False, device_check: DeviceCheck | None = None) -> dict:
    """Write ``model.ort``, ``required_operators.config`` and ``manifest.json`` to ``out_dir``.

    Returns the manifest. Raises ``ValueError`` for a bad input model and
    :class:`ParityError` when the ``.ort`` model's outputs differ from the ``.onnx`` one's.
    ``device_check``: also run the ``.ort`` model on ONNX Runtime's aarch64 build under
    emulation; its failure (:class:`~edgepack.export.arm64_check.Arm64CheckFailed`, exit 1) leaves
    nothing written, like a parity failure, and its figures go into the manifest.
    """
    for name, value in (("atol", atol), ("rtol", rtol)):
        check_number("package", name, value, 0.0)
    onnx_path = Path(onnx_path)
    graph = check_onnx_file(onnx_path)
    check_inputs_and_outputs(graph, onnx_path, "packaging")
    out_dir = check_package_folder(out_dir, onnx_path, owned=owned_folder)
    with output_folder(out_dir):
        return _write_package(onnx_path, graph, out_dir, atol, rtol, device_check)


def _write_package(onnx_path: Path, graph, out_dir: Path, atol: float, rtol: float,
                   device_check: DeviceCheck | None = None) -> dict:
    """Convert, check parity and write the package's files into ``out_dir``."""
    import onnxruntime as ort

    work_dir = Path(tempfile.mkdtemp(prefix=".package.", dir=out_dir))
    try:
        ort_model, config = _convert_to_ort(onnx_path, work_dir)
        parity, feeds, ort_session = _check_ort_parity(onnx_path, ort_model, graph, atol, rtol)
        if not parity["ok"]:
            raise ParityError(f"the .ort model's outputs differ from {onnx_path.name} beyond "
                              f"atol={atol}, rtol={rtol}:\n" + "\n".join(parity["lines"]))
        device = {"arm64": _check_on_arm64(ort_model, ort_session, feeds, device_check)} \
            if device_check is not None else {}
        final_model, final_config = work_dir / "model.ort", work_dir / OPERATORS_CONFIG
        ort_model.rename(final_model)
        _write_operators_config(config, final_config, final_model.name)
        manifest = {
            PACKAGE_MARKER: True,
            "format": "ort",
            "onnxruntime_version": ort.__version__,
            "source": {"path": onnx_path.name, **_file_entry(onnx_path)},
            "files": {p.name: _file_entry(p) for p in (final_model, final_config)},
            "size_bytes": final_model.stat().st_size,
            "opset": {d.domain or "ai.onnx": d.version for d in graph.opset_import},
            "inputs": _value_info(graph.graph.input),
            "outputs": _value_info(graph.graph.output),
            "required_operators": read_operators_config(final_config),
            "parity": {k: v for k, v in parity.items() if k != "outputs"},
            **({"device_checks": device} if device else {}),
        }
        for item in (final_model, final_config):
            os.replace(item, out_dir / item.name)
        atomic_write_json(out_dir / MANIFEST, manifest)  # last: a complete package has it
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return manifest


@dataclass
class PackageConfig(StageConfig):
    """The mobile package (``.ort`` + operator config) as the last stage of a pipeline;
    ``check = "arm64"`` also runs it on ONNX Runtime's aarch64 build under emulation."""

    kind = "package"
    atol: float = option(1e-4, "largest absolute output difference of .ort to .onnx")
    rtol: float = option(1e-3, "largest relative output difference of .ort to .onnx")
    check: str = option("", "on-device check under emulation: '' (none) or arm64",
                        choices=("", "arm64"))
    arm64_cpus: list = option(factory=lambda: list(DEFAULT_CPUS),
                              help="emulated CPUs of the arm64 check", flag=False)
    device_atol: float = option(1e-4, "largest absolute output difference aarch64 to x86")
    device_rtol: float = option(1e-3, "largest relative output difference aarch64 to x86")

    def __post_init__(self):
        from edgepack.core.checks import check_choice, check_finite_fields
        from edgepack.export.arm64_check import check_cpus

        check_finite_fields(self, "package")
        for name in ("atol", "rtol", "device_atol", "device_rtol"):
            check_number("package", name, getattr(self, name), 0.0)
        check_choice("package", "check", self.check, ("", "arm64"))
        if self.check:
            from edgepack.export.arm64_userland import check_can_run

            check_cpus(self.arm64_cpus)
            check_can_run()     # a recipe that cannot run its check stops before any stage


def _device_check(config: PackageConfig) -> DeviceCheck | None:
    if not config.check:
        return None
    from edgepack.export.arm64_check import userland_for_check

    return DeviceCheck(userland_for_check(), tuple(config.arm64_cpus), config.device_atol,
                       config.device_rtol)


def _run_stage(config: PackageConfig, given: StageInput) -> StageResult:
    manifest = package_model(given.artifact, given.folder, atol=config.atol, rtol=config.rtol,
                             owned_folder=True, device_check=_device_check(config))
    return StageResult(given.folder / "model.ort", manifest)


register_stage(StageSpec("package", PackageConfig, consumes="onnx", produces="package",
                         run=_run_stage, failures=(ParityError, Arm64CheckFailed)))
