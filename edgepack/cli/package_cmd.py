"""``edgepack package``: an ONNX model -> ORT format, reduced-operator config and manifest,
for minimal ONNX Runtime builds on mobile and embedded devices."""


def register(sub) -> None:
    p = sub.add_parser("package", help="convert an ONNX model to ORT format (.ort) with the "
                                       "operator config a minimal build needs")
    p.add_argument("model", help="input .onnx")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument("--atol", type=float, default=1e-4, help=".ort vs .onnx tolerance")
    p.add_argument("--rtol", type=float, default=1e-3)
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from pathlib import Path

    from export.package import MANIFEST, package_model

    manifest = package_model(args.model, args.output, atol=args.atol, rtol=args.rtol)
    print("\n".join(manifest["parity"]["lines"]))
    operators = sum(len(ops) for opsets in manifest["required_operators"].values()
                    for ops in opsets.values())
    print(f"wrote {Path(args.output) / 'model.ort'} ({manifest['size_bytes']:,} bytes, "
          f"{operators} operator kinds) and {Path(args.output) / MANIFEST}")
    return 0
