"""``edgepack package``: an ONNX model -> ORT format, reduced-operator config and manifest,
for minimal ONNX Runtime builds on mobile and embedded devices; ``--check arm64`` also runs
the package on ONNX Runtime's aarch64 build under emulation and compares its answers."""

import sys


def register(sub) -> None:
    from edgepack.export.arm64_check import CPU_MODELS, DEFAULT_CPUS

    p = sub.add_parser("package", help="convert an ONNX model to ORT format (.ort) with the "
                                       "operator config a minimal build needs")
    p.add_argument("model", help="input .onnx")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--atol", type=float, default=1e-4,
                   help=".ort vs .onnx absolute tolerance, a finite number >= 0 (default 1e-4)")
    p.add_argument("--rtol", type=float, default=1e-3,
                   help=".ort vs .onnx relative tolerance, a finite number >= 0 (default 1e-3)")
    p.add_argument("--check", choices=["arm64"], default=None,
                   help="also run the package on ONNX Runtime's aarch64 build under qemu-user "
                        "and compare its outputs with this machine's (the userland is built "
                        "once, see `edgepack env --setup-arm64`)")
    p.add_argument("--arm64-cpu", default=",".join(DEFAULT_CPUS),
                   help="emulated CPUs, comma-separated, from: " + ", ".join(CPU_MODELS)
                        + " (default: %(default)s, without and with the int8 dot product)")
    p.add_argument("--device-atol", type=float, default=1e-4,
                   help="aarch64 vs x86 tolerance, |arm - x86| <= atol + rtol * |x86|; a "
                        "finite number >= 0 (default 1e-4)")
    p.add_argument("--device-rtol", type=float, default=1e-3,
                   help="aarch64 vs x86 relative tolerance, a finite number >= 0 "
                        "(default 1e-3)")
    p.set_defaults(handler=handle)


def device_check_from_args(args):
    """The DeviceCheck the flags ask for (None without --check); builds the userland when
    it is not cached yet, saying so on stderr."""
    if args.check is None:
        return None
    from pathlib import Path

    from edgepack.core.onnx_files import check_onnx_file
    from edgepack.export.arm64_check import check_cpus, userland_for_check
    from edgepack.export.arm64_userland import check_can_run
    from edgepack.export.package import DeviceCheck

    cpus = check_cpus(c.strip() for c in args.arm64_cpu.split(",") if c.strip())
    check_onnx_file(Path(args.model))   # a bad model is said before a userland is built
    check_can_run()
    userland = userland_for_check(log=lambda line: print(line, file=sys.stderr))
    return DeviceCheck(userland, cpus, args.device_atol, args.device_rtol)


TOLERANCES = ("atol", "rtol", "device_atol", "device_rtol")


def check_tolerances(args) -> None:
    """Every tolerance flag a finite number >= 0, before any file is read or written."""
    from edgepack.core.checks import check_number

    for name in TOLERANCES:
        check_number("", "--" + name.replace("_", "-"), getattr(args, name), 0.0)


def handle(args) -> int:
    from pathlib import Path

    from edgepack.export.package import MANIFEST, package_model

    check_tolerances(args)
    device_check = device_check_from_args(args)
    manifest = package_model(args.model, args.output, atol=args.atol, rtol=args.rtol,
                             device_check=device_check)
    print("\n".join(manifest["parity"]["lines"]))
    for check in manifest.get("device_checks", {}).values():
        print("\n".join(check["lines"]))
    operators = sum(len(ops) for opsets in manifest["required_operators"].values()
                    for ops in opsets.values())
    print(f"wrote {Path(args.output) / 'model.ort'} ({manifest['size_bytes']:,} bytes, "
          f"{operators} operator kinds) and {Path(args.output) / MANIFEST}")
    return 0
