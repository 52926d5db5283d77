"""``edgepack env``: versions, execution providers, CPU model and flags, to paste in an issue."""

import json
import sys


def register(sub) -> None:
    p = sub.add_parser("env", help="print versions, execution providers and CPU flags")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from bench.envinfo import environment
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
