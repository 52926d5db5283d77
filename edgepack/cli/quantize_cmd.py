"""``edgepack quantize``: ONNX Runtime post-training quantization with checks."""


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize an ONNX model (dynamic, static, fp16, int4)")
    p.add_argument("model", help="input .onnx")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--mode", default="static", help="dynamic | static | fp16 | int4")
    p.add_argument("--calibration", default="minmax", help="minmax | entropy | percentile")
    p.add_argument("--format", default="qdq", help="qdq | qoperator")
    p.add_argument("--data", default=None, help="calibration data (.npz, one array per input)")
    p.add_argument("--samples", type=int, default=512, help="calibration samples to use")
    p.add_argument("--per-channel", action="store_true")
    p.add_argument("--reduce-range", action="store_true")
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--block-size", type=int, default=128, help="int4 block size")
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from bench.inputs import load_npz
    from compress.quantize import QuantizeConfig, quantize

    config = QuantizeConfig(mode=args.mode, calibration=args.calibration, format=args.format,
                            per_channel=args.per_channel, reduce_range=args.reduce_range,
                            symmetric=args.symmetric, calibration_samples=args.samples,
                            block_size=args.block_size)
    calibration = None
    if args.data:
        arrays = load_npz(args.data)
        calibration = {k: v for k, v in arrays.items() if k not in ("labels", "reference")}
    result = quantize(args.model, config, args.output, calibration=calibration)
    record = result.record
    print(f"wrote {args.output}: {record['mode']}, {record['size_bytes_before']:,} -> "
          f"{record['size_bytes']:,} bytes, {record['calibration_samples']} calibration samples")
    return 0
