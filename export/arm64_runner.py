"""Runs inside the emulated aarch64 userland: load a model in ONNX Runtime, run it on the
given inputs, write the outputs. Standard library, numpy and onnxruntime only (this file is
executed by the guest's python3.11, never imported by edgepack).

    python3 arm64_runner.py REQUEST.json

The request names the model, an ``.npz`` of feed dicts (``case{i}/{input name}``), the
output ``.npz`` and the result ``.json`` to write, and the ``/proc/cpuinfo`` text of the
emulated CPU (its MIDR lines; the ``Features`` line is filled in here from the kernel's
HWCAP bits, which qemu sets from the emulated CPU). The cpuinfo file is written before
ONNX Runtime is imported, so its CPU detection reads a consistent aarch64 CPU rather than
the host's x86 one (reading the host's makes it crash under qemu).
"""

import ctypes
import json
import platform
import sys

AT_HWCAP, AT_HWCAP2 = 16, 26
# Linux arm64 HWCAP bits, in the kernel's order (arch/arm64/include/uapi/asm/hwcap.h).
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid "
               "asimdrdm jscvt fcma lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit "
               "uscat ilrcpc flagm ssbs sb paca pacg").split()
HWCAP2_NAMES = ("dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm "
                "svef32mm svef64mm svebf16 i8mm bf16 dgh rng bti mte").split()


def cpu_features() -> list:
    """The CPU features the kernel (here: qemu) reports, named as /proc/cpuinfo names them."""
    getauxval = ctypes.CDLL(None).getauxval
    getauxval.restype = ctypes.c_ulong
    getauxval.argtypes = [ctypes.c_ulong]
    bits, bits2 = getauxval(AT_HWCAP), getauxval(AT_HWCAP2)
    return ([n for i, n in enumerate(HWCAP_NAMES) if bits >> i & 1]
            + [n for i, n in enumerate(HWCAP2_NAMES) if bits2 >> i & 1])


def write_cpuinfo(path: str, template: str, features: list) -> None:
    with open(path, "w") as f:
        f.write(template.replace("{features}", " ".join(features)))


def run(request: dict) -> dict:
    features = cpu_features()
    write_cpuinfo(request["cpuinfo_path"], request["cpuinfo"], features)
    result = {"machine": platform.machine(), "python": platform.python_version(),
              "cpu_features": features}
    try:
        import numpy as np
        import onnxruntime as ort
    except Exception as exc:  # noqa: BLE001 - reported to the host, which decides
        return {**result, "ok": False, "stage": "import", "error": f"{type(exc).__name__}: {exc}"}
    result.update(onnxruntime=ort.__version__, numpy=np.__version__,
                  providers=ort.get_available_providers())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(request["model"], options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001
        return {**result, "ok": False, "stage": "load", "error": f"{type(exc).__name__}: {exc}"}
    cases = {}
    with np.load(request["inputs"]) as stored:
        for key in stored.files:
            case, name = key.split("/", 1)
            cases.setdefault(case, {})[name] = stored[key]
    outputs = {}
    names = [o.name for o in session.get_outputs()]
    for case in sorted(cases, key=lambda c: int(c[4:])):
        try:
            values = session.run(None, cases[case])
        except Exception as exc:  # noqa: BLE001
            return {**result, "ok": False, "stage": "run", "case": case,
                    "error": f"{type(exc).__name__}: {exc}"}
        for name, value in zip(names, values):
            outputs[f"{case}/{name}"] = value
    np.savez(request["outputs"], **outputs)
    return {**result, "ok": True, "output_names": names}


def main() -> int:
    with open(sys.argv[1]) as f:
        request = json.load(f)
    result = run(request)
    with open(request["result"], "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
