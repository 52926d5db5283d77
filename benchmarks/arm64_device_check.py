"""The arm64 on-device check, measured: set-up time cold and cached, disk, and per model the
largest difference between x86 and aarch64 ONNX Runtime on the same packaged file.

    python benchmarks/arm64_device_check.py                 # cached userland (built when missing)
    python benchmarks/arm64_device_check.py --cold          # also a cold build in a scratch cache

Models (random weights: kernels are compared, not accuracy): the demo's int8 CNN (MNIST-1D
CNN in static QDQ int8, the demo recipe's quantize settings), a MobileNetV3-small (depthwise
convolutions) in fp32, a 2-layer BERT sentence encoder in fp32 and in dynamic int8, and a CNN
saved after ONNX Runtime's x86 optimizations (NCHWc), which must fail naming the operator.
Each runs on every CPU of ``--cpus``. Emulated run times are printed as what they are, not
as device latency. The machine, CPU flags and versions are printed first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def timed_build(cache_root) -> tuple[float, object]:
    from edgepack.export.arm64_userland import build_userland

    started = time.perf_counter()
    userland = build_userland(cache_root, log=lambda line: print("  " + line, flush=True))
    return time.perf_counter() - started, userland


def models(folder: Path) -> dict:
    """name -> (onnx path, device tolerance (atol, rtol))."""
    from edgepack.zoo.arm64_models import (bert_encoder, demo_int8_model, depthwise_cnn,
                                           dynamic_int8, x86_optimized_cnn)

    bert = bert_encoder(folder)
    return {"demo int8 CNN (static QDQ)": (demo_int8_model(folder), (1e-4, 1e-3)),
            "MobileNetV3-small fp32 (depthwise)": (depthwise_cnn(folder), (1e-4, 1e-3)),
            "BERT encoder fp32": (bert, (1e-4, 1e-3)),
            "BERT encoder dynamic int8": (dynamic_int8(bert, folder / "bert.int8.onnx"),
                                          (1e-4, 1e-3)),
            "CNN optimized for x86 (NCHWc)": (x86_optimized_cnn(folder), (1e-4, 1e-3))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cold", action="store_true", help="also time a cold build")
    ap.add_argument("--cpus", default="cortex-a53,cortex-a72,cortex-a76,neoverse-n1")
    args = ap.parse_args()

    from edgepack.bench.envinfo import environment
    from edgepack.export.arm64_check import Arm64CheckFailed
    from edgepack.export.arm64_userland import folder_bytes
    from edgepack.export.package import DeviceCheck, package_model

    env = environment()
    print(f"host: {env['cpu']} ({env['arch']}, {env['logical_cores']} logical cores), flags: "
          f"{' '.join(env['flags'])}; onnxruntime {env['onnxruntime']}")
    if args.cold:
        scratch = Path(tempfile.mkdtemp(prefix="arm64-cold."))
        try:
            seconds, userland = timed_build(scratch)
            print(f"set-up, cold: {seconds:.1f} s, {folder_bytes(userland.root) / 1e6:.0f} MB")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds, userland = timed_build(None)
    print(f"set-up, cached (or built now): {seconds:.2f} s at {userland.folder}; "
          f"{userland.info['disk_bytes'] / 1e6:.0f} MB; {userland.info['qemu']}; "
          f"onnxruntime {userland.info['onnxruntime']} aarch64 wheel")
    cpus = tuple(args.cpus.split(","))
    work = Path(tempfile.mkdtemp(prefix="arm64-models."))
    try:
        print("\n| model | emulated CPU | max abs err x86 vs aarch64 | top-1 | cosine | "
              "emulated run s |\n|---|---|---|---|---|---|")
        for name, (path, (atol, rtol)) in models(work).items():
            try:
                manifest = package_model(path, work / f"pkg-{path.stem}", device_check=
                                         DeviceCheck(userland, cpus, atol, rtol))
            except Arm64CheckFailed as exc:
                print(f"| {name} | – | fails (exit 1): {str(exc).splitlines()[0]} | | | |")
                continue
            for cpu, result in manifest["device_checks"]["arm64"]["cpus"].items():
                rows = result["outputs"]
                top1 = min((r["top1_agreement"] for r in rows if "top1_agreement" in r),
                           default=float("nan"))
                cosine = min((r["mean_cosine"] for r in rows if "mean_cosine" in r),
                             default=float("nan"))
                print(f"| {name} | {cpu} ({'dot' if 'asimddp' in result['cpu_features'] else 'no dot'}) | "
                      f"{result['max_abs']:.2e} | {top1:.4f} | {cosine:.6f} | "
                      f"{result['emulated_seconds']} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
