"""``edgepack export``: a torch model (module:function + weights) -> verified ONNX."""


def register(sub) -> None:
    p = sub.add_parser("export", help="export a torch model to ONNX, with a parity check")
    p.add_argument("--model", required=True, help="builder, as module:function")
    p.add_argument("--args", default="{}", help="builder arguments as JSON, e.g. '{\"width\": 16}'")
    p.add_argument("--weights", default="", help=".safetensors (or a torch zip checkpoint)")
    p.add_argument("--trust-pickle", action="store_true",
                   help="allow full unpickling of a .pt file (runs any code in it)")
    p.add_argument("--input-shape", required=True, help="example input shape, e.g. 1,1,40")
    p.add_argument("--exporter", default="dynamo", help="dynamo (default) or torchscript")
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--static-batch", action="store_true", help="fix the batch axis")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-3)
    p.add_argument("--warn-only", action="store_true",
                   help="report a parity mismatch as a warning instead of exit code 1")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.set_defaults(handler=handle)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"--input-shape {text!r} is not valid; expected positive integers "
                         "separated by commas, e.g. 1,1,40")
    return shape


def handle(args) -> int:
    import json
    from pathlib import Path

    import torch

    from edgepack.teacher import build_model
    from export.files import check_output_file
    from export.torch_export import ExportConfig, export_onnx
    from export.weights import load_weights

    shape = parse_shape(args.input_shape)
    try:
        builder_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--args is not valid JSON: {exc}") from exc
    config = ExportConfig(exporter=args.exporter, opset=args.opset,
                          dynamic_batch=not args.static_batch, atol=args.atol, rtol=args.rtol,
                          fail_on_mismatch=not args.warn_only)
    check_output_file(args.output)
    model = build_model(args.model, builder_args, Path.cwd())
    if args.weights:
        load_weights(model, args.weights, trust_pickle=args.trust_pickle)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(shape, generator=generator)
    held_out = torch.randn((8, *shape[1:]), generator=generator)
    result = export_onnx(model, config, example, args.output, parity_inputs=held_out)
    parity = result.record["parity"]
    print("\n".join(parity["lines"]))
    status = "parity ok" if parity["ok"] else "WARNING: parity beyond tolerance"
    print(f"wrote {args.output} ({result.record['size_bytes']:,} bytes, "
          f"{result.record['params']:,} params); {status}")
    return 0
