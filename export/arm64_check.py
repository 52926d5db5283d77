"""Run a model on ONNX Runtime's aarch64 build, under qemu-user, and compare with x86.

A model that loads here can fail on an ARM device: an operator only the x86 build has (ONNX
Runtime's NCHWc layout kernels, which an ``.ort`` file optimized for amd64 contains), an int8
kernel that the ARM build implements differently, a type its kernels lack. :func:`check_arm64`
finds out without a device: the same file and the same inputs go through this machine's
ONNX Runtime and through the aarch64 wheel of the same version in the userland of
:mod:`edgepack.export.arm64_userland`, one run per emulated CPU, and every output is compared (max
absolute and relative error; top-1 agreement and mean cosine for outputs with a class or
feature axis).

How it runs: ``qemu-aarch64-static -cpu MODEL -L VIEW VIEW/usr/bin/python3``. ``VIEW`` is a
folder made for each run that links to the userland's folders but has its own ``/proc`` and
``/sys`` files for the emulated CPU (one possible/present CPU; a ``/proc/cpuinfo`` with the
CPU's MIDR and the features qemu reports). Without them the guest reads the host's x86
``/proc/cpuinfo`` and ``/sys`` and ONNX Runtime's CPU probe crashes (SIGSEGV). No root, no
chroot, no binfmt_misc registration is needed to run. Emulated time is not device time: no
latency is measured here.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from edgepack.core.errors import BadInput, CheckFailed
from edgepack.export.arm64_userland import (GUEST_PYTHON, GUEST_SITE, SETUP_HINT, Userland,
                                            qemu_binary, qemu_version)
from edgepack.export.parity import compare_outputs

RUNNER = Path(__file__).with_name("arm64_runner.py")
# qemu's aarch64 CPU models with their MIDR (implementer, variant, part, revision): what a
# real core of that kind reports in /proc/cpuinfo, which ONNX Runtime's CPU probe reads.
CPU_MODELS = {
    "cortex-a53": (0x41, 0x0, 0xD03, 4),    # Raspberry Pi 3 / Zero 2, many boards: no dot product
    "cortex-a72": (0x41, 0x0, 0xD08, 3),    # Raspberry Pi 4: no dot product
    "cortex-a76": (0x41, 0x4, 0xD0B, 1),    # Raspberry Pi 5, phones: int8 dot product (sdot/udot)
    "neoverse-n1": (0x41, 0x3, 0xD0C, 1),   # Graviton 2, Ampere Altra: dot product
}
DEFAULT_CPUS = ("cortex-a72", "cortex-a76")  # the two int8 kernel families: with and without dot
RUN_TIMEOUT_S = 900
# How ONNX Runtime names an operator it cannot run: no kernel for a known op, or an op
# (with its domain) that the build does not register at all.
MISSING_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with "
                            r"name '([^']*)'")
UNREGISTERED_OP = re.compile(r"([\w.]*):(\w+)\((\d+)\) is not a registered function/op")


class Arm64CheckFailed(CheckFailed):
    """The model failed to load or run on aarch64, or its outputs differ beyond tolerance."""

    exit_code = 1


def check_cpus(cpus) -> tuple[str, ...]:
    """The emulated CPUs asked for, each one qemu's and this table's, or BadInput."""
    cpus = tuple(cpus)
    if not cpus:
        raise BadInput("the arm64 check needs at least one CPU model; choose from "
                       + ", ".join(CPU_MODELS))
    for cpu in cpus:
        if cpu not in CPU_MODELS:
            raise BadInput(f"unknown arm64 CPU model {cpu!r}; choose from "
                           + ", ".join(CPU_MODELS))
    return cpus


def cpuinfo_template(cpu: str) -> str:
    implementer, variant, part, revision = CPU_MODELS[cpu]
    return (f"processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: {{features}}\n"
            f"CPU implementer\t: 0x{implementer:02x}\nCPU architecture: 8\n"
            f"CPU variant\t: 0x{variant:x}\nCPU part\t: 0x{part:03x}\n"
            f"CPU revision\t: {revision}\n\n")


def make_view(userland: Userland, folder: Path) -> Path:
    """A guest root that links to the userland's folders, with its own /proc and /sys files.

    qemu resolves every absolute guest path in the view first: the model, inputs and outputs
    (host paths) are read from the host because the userland has no such files. A host path
    that also exists inside the userland (a model under /usr/share/..., say) would be read
    from the userland instead; the check's own files live in a fresh temporary folder.
    """
    view = folder / "view"
    view.mkdir()
    for entry in userland.root.iterdir():
        if entry.name not in ("proc", "sys"):
            (view / entry.name).symlink_to(entry)
    cpu_dir = view / "sys/devices/system/cpu"
    cpu_dir.mkdir(parents=True)
    for name in ("possible", "present", "online"):
        (cpu_dir / name).write_text("0\n")
    (view / "proc").mkdir()
    (view / "proc/cpuinfo").write_text("")      # filled in by the runner, for its CPU
    return view


def _save_feeds(feeds_list: list[dict], path: Path) -> None:
    np.savez(path, **{f"case{i}/{name}": np.asarray(value)
                      for i, feeds in enumerate(feeds_list) for name, value in feeds.items()})


def run_on_arm64(model: Path, feeds_list: list[dict], userland: Userland, cpu: str,
                 work: Path, qemu: Path | None = None) -> tuple[dict, dict]:
    """Run ``model`` on ``feeds_list`` in the emulated ``cpu``; the runner's result record
    and the outputs by ``case{i}/{name}``."""
    qemu = qemu or qemu_binary()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{cpu}.", dir=work))
    view = make_view(userland, run_dir)
    inputs, outputs, result = run_dir / "inputs.npz", run_dir / "outputs.npz", \
        run_dir / "result.json"
    _save_feeds(feeds_list, inputs)
    request = {"model": str(model.resolve()), "inputs": str(inputs), "outputs": str(outputs),
               "result": str(result), "cpuinfo_path": "/proc/cpuinfo",
               "cpuinfo": cpuinfo_template(cpu)}
    (run_dir / "request.json").write_text(json.dumps(request))
    shutil.copy(RUNNER, run_dir / RUNNER.name)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": GUEST_SITE, "PYTHONNOUSERSITE": "1",
           "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
    started = time.perf_counter()
    try:
        done = subprocess.run([str(qemu), "-cpu", cpu, "-L", str(view),
                               str(view / GUEST_PYTHON.lstrip("/")), str(run_dir / RUNNER.name),
                               str(run_dir / "request.json")],
                              env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                              check=False)
    except subprocess.TimeoutExpired as exc:
        raise Arm64CheckFailed(f"arm64 ({cpu}): the emulated run of {model.name} did not "
                               f"finish in {RUN_TIMEOUT_S} s") from exc
    if not result.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise Arm64CheckFailed(f"arm64 ({cpu}): the emulated ONNX Runtime exited with "
                               f"{_exit_text(done.returncode)} before writing its result: "
                               f"{tail[0][:300]}")
    record = json.loads(result.read_text())
    record["emulated_seconds"] = round(time.perf_counter() - started, 1)
    values = {}
    if record.get("ok"):
        with np.load(outputs) as stored:
            values = {key: stored[key] for key in stored.files}
    return record, values


def _exit_text(code: int) -> str:
    return f"signal {-code}" if code < 0 else f"exit code {code}"


def failure_line(cpu: str, model: Path, record: dict) -> str:
    """One line naming what failed on aarch64: the missing operator when it is one."""
    error = record.get("error", "")
    unregistered = UNREGISTERED_OP.search(error)
    if unregistered:
        domain, op, opset = unregistered.groups()
        return (f"arm64 ({cpu}): ONNX Runtime's aarch64 build does not have operator "
                f"{domain or 'ai.onnx'}:{op} (opset {opset}) that {model.name} uses; "
                f"{hint_for(domain)}")
    missing = MISSING_KERNEL.search(error)
    if missing:
        op, opset, node = missing.groups()
        return (f"arm64 ({cpu}): ONNX Runtime's aarch64 build has no kernel for operator "
                f"{op} (opset {opset}, node {node!r}) in {model.name}; {hint_for('')}")
    first = error.strip().splitlines()[0][:300] if error.strip() else "no message"
    return f"arm64 ({cpu}): {model.name} failed to {record.get('stage', 'run')}: {first}"


X86_ONLY_DOMAIN = "com.microsoft.nchwc"   # ONNX Runtime's NCHWc layout kernels (x86 only)


def hint_for(domain: str) -> str:
    if domain == X86_ONLY_DOMAIN:
        return ("the model was saved after ONNX Runtime's x86-only NCHWc layout optimization; "
                "package the model as exported instead, whose .ort conversion stays portable")
    return "replace the operator, or export the model without it"


def _class_axis_figures(expected: np.ndarray, actual: np.ndarray) -> dict:
    """Top-1 agreement and mean cosine over rows, for float outputs with a last axis > 1."""
    if expected.ndim < 2 or expected.shape[-1] < 2 or not np.issubdtype(expected.dtype,
                                                                           np.floating):
        return {}
    e = expected.reshape(-1, expected.shape[-1]).astype(np.float64)
    a = actual.reshape(-1, actual.shape[-1]).astype(np.float64)
    norms = np.linalg.norm(e, axis=1) * np.linalg.norm(a, axis=1)
    cosine = np.where(norms > 0, (e * a).sum(1) / np.maximum(norms, 1e-300), 1.0)
    return {"top1_agreement": float((e.argmax(1) == a.argmax(1)).mean()),
            "mean_cosine": float(cosine.mean())}


def compare_with_x86(reference_outputs: list[dict], arm_values: dict, atol: float,
                     rtol: float) -> list[dict]:
    """Per output and case: shape, max abs/rel error, within tolerance, top-1 and cosine."""
    rows = []
    for i, outputs in enumerate(reference_outputs):
        for name, expected in outputs.items():
            actual = arm_values.get(f"case{i}/{name}")
            if actual is None:
                rows.append({"output": name, "case": i, "ok": False, "missing": True,
                             "batch": int(expected.shape[0]) if expected.ndim else 1})
                continue
            parity = compare_outputs(name, int(expected.shape[0]) if expected.ndim else 1,
                                     expected, actual, atol, rtol)
            rows.append({"output": name, "case": i, "batch": parity.batch,
                         "shape_ok": parity.shape_ok, "max_abs": parity.max_abs,
                         "max_rel": parity.max_rel, "ok": parity.ok,
                         **(_class_axis_figures(expected, actual) if parity.shape_ok else {})})
    return rows


def summary_lines(cpu: str, rows: list[dict]) -> list[str]:
    lines = []
    for row in rows:
        mark = "\u2713" if row["ok"] else "\u2717"
        head = f"  {mark} arm64 {cpu}: {row['output']} (batch {row.get('batch', '?')})"
        if row.get("missing"):
            lines.append(f"{head}: output missing")
        elif not row["shape_ok"]:
            lines.append(f"{head}: shape mismatch")
        else:
            extra = "".join(f", {k.replace('_', ' ')} {row[k]:.4f}"
                            for k in ("top1_agreement", "mean_cosine") if k in row)
            lines.append(f"{head}: max abs err {row['max_abs']:.2e}, max rel err "
                         f"{row['max_rel']:.2e}{extra}")
    return lines


def check_arm64(model, feeds_list: list[dict], reference_outputs: list[dict],
                userland: Userland, cpus=DEFAULT_CPUS, atol: float = 1e-4,
                rtol: float = 1e-3) -> dict:
    """Run ``model`` on aarch64 for each CPU in ``cpus``; compare with ``reference_outputs``
    (this machine's outputs of the same file on ``feeds_list``, one dict per case).

    Returns the record for the manifest. Raises :class:`Arm64CheckFailed` (exit 1) when the
    model does not load or run on aarch64, naming the operator where one is missing, or
    when an output differs beyond ``|arm - x86| <= atol + rtol * |x86|``.
    """
    model = Path(model)
    cpus = check_cpus(cpus)
    qemu = qemu_binary()
    record = {"qemu": qemu_version(qemu), "userland": {k: userland.info.get(k) for k in (
        "suite", "onnxruntime", "numpy", "built")}, "atol": atol, "rtol": rtol,
        "note": "outputs compared with this machine's ONNX Runtime on the same inputs; "
                "emulated run times are not device latency", "cpus": {}}
    work = Path(tempfile.mkdtemp(prefix="edgepack-arm64."))
    try:
        for cpu in cpus:
            result, values = run_on_arm64(model, feeds_list, userland, cpu, work, qemu)
            if not result.get("ok"):
                raise Arm64CheckFailed(failure_line(cpu, model, result))
            rows = compare_with_x86(reference_outputs, values, atol, rtol)
            record["cpus"][cpu] = {
                "ok": all(r["ok"] for r in rows), "onnxruntime": result["onnxruntime"],
                "cpu_features": result["cpu_features"], "machine": result["machine"],
                "emulated_seconds": result["emulated_seconds"],
                "max_abs": max((r.get("max_abs", float("inf")) for r in rows), default=0.0),
                "outputs": rows, "lines": summary_lines(cpu, rows)}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    record["ok"] = all(c["ok"] for c in record["cpus"].values())
    record["lines"] = [line for c in record["cpus"].values() for line in c["lines"]]
    if not record["ok"]:
        raise Arm64CheckFailed(f"arm64: the outputs of {model.name} on aarch64 differ from "
                               f"x86 beyond atol={atol}, rtol={rtol}:\n"
                               + "\n".join(record["lines"]))
    return record


def userland_for_check(cache_root=None, log=print) -> Userland:
    """The userland the check runs in: the cached one, else built now (BadInput when qemu,
    debootstrap or root is missing, naming which)."""
    from edgepack.export.arm64_userland import build_userland

    qemu_binary()  # say first that qemu is missing, the one thing every path needs
    return build_userland(cache_root, log=log)


__all__ = ["Arm64CheckFailed", "CPU_MODELS", "DEFAULT_CPUS", "SETUP_HINT", "check_arm64",
           "check_cpus", "userland_for_check"]
