"""``edgepack env``: versions, execution providers, CPU model and flags, to paste in an issue;
``--setup-arm64`` builds the emulated aarch64 userland ``package --check arm64`` runs in."""

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("env", help="print versions, execution providers and CPU flags")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--setup-arm64", action="store_true",
                   help="build (once, cached) the aarch64 userland of Debian's packages and "
                        "onnxruntime's aarch64 wheel that `package --check arm64` runs in; "
                        "needs root, qemu-user-static and debootstrap")
    p.set_defaults(handler=handle)


def setup_arm64() -> int:
    """Build or find the userland and say where it is, how big and how long it took."""
    from edgepack.export.arm64_userland import build_userland

    userland = build_userland(log=lambda line: print(line, file=sys.stderr))
    info = userland.info
    print(f"arm64 userland: {userland.folder}\n  Debian {info['suite']} ({info['debian_packages']} "
          f"packages), onnxruntime {info['onnxruntime']}, numpy {info['numpy']}, "
          f"{info['qemu']}\n  built {info['built']} in {info['setup_seconds']} s, "
          f"{info['disk_bytes'] / 1e6:.0f} MB on disk")
    return 0


def handle(args) -> int:
    if args.setup_arm64:
        return setup_arm64()
    from edgepack.bench.envinfo import environment
    from edgepack import __version__

    info = {"edgepack": __version__, **environment()}
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(value) or "-"
        print(f"{key:24} {value}")
    if info["onnxruntime_conflict"]:
        print("warning: onnxruntime and onnxruntime-gpu are both installed and share one "
              "module; uninstall both, then install edgepack[cpu] or edgepack[gpu]",
              file=sys.stderr)
    return 0
