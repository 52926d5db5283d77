"""``edgepack quantize``: ONNX Runtime post-training quantization with checks."""

import argparse


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize an ONNX model (dynamic, static, fp16, int4)")
    p.add_argument("model", help="input .onnx")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--mode", default="static", help="dynamic | static | fp16 | int4")
    p.add_argument("--preset", default="",
                   help="target settings: x86-vnni | x86-avx2 | arm64 | gpu-tensorrt "
                        "(explicit flags win)")
    p.add_argument("--calibration", default="minmax", help="minmax | entropy | percentile")
    p.add_argument("--format", default=None, help="qdq (default) | qoperator")
    p.add_argument("--activation-type", default=None,
                   help="int8 (S8S8, default for QDQ) | uint8 (U8S8, default for QOperator)")
    p.add_argument("--data", default=None,
                   help="calibration data (.npz, one array per input; also used for the "
                        "NaN/Inf check)")
    p.add_argument("--samples", type=int, default=512, help="calibration samples to use")
    p.add_argument("--per-channel", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--reduce-range", action=argparse.BooleanOptionalAction, default=None,
                   help="7-bit weights, for AVX2/AVX512 machines without VNNI")
    p.add_argument("--symmetric", action=argparse.BooleanOptionalAction, default=None,
                   help="symmetric activations (zero point 0)")
    p.add_argument("--block-size", type=int, default=128, help="int4 block size")
    p.add_argument("--keep-io-fp32", action=argparse.BooleanOptionalAction, default=True,
                   help="fp16: keep float32 inputs and outputs")
    p.add_argument("--accuracy-aware", action="store_true",
                   help="keep the worst nodes in float until the drop is within --tolerance")
    p.add_argument("--eval-data", default=None,
                   help="evaluation .npz for --accuracy-aware (with labels: top-1 accuracy; "
                        "without: cosine similarity to the fp32 outputs)")
    p.add_argument("--tolerance", type=float, default=None,
                   help="largest accepted accuracy drop (absolute)")
    p.add_argument("--max-float-nodes", type=int, default=8,
                   help="accuracy-aware: most nodes kept in float")
    p.set_defaults(handler=handle)


def _calibration_from(path):
    from bench.inputs import load_npz

    arrays = load_npz(path)
    return {k: v for k, v in arrays.items() if k not in ("labels", "reference")}


def _evaluation_from(path):
    from bench.inputs import load_npz

    return {k: v for k, v in load_npz(path).items() if k != "reference"}


def _print_search(search: dict) -> None:
    for index, step in enumerate(search["steps"]):
        kept = ", ".join(step["float_nodes"]) or "none"
        print(f"  step {index}: {search['metric']} {step['accuracy']:.4f} (drop "
              f"{step['drop']:+.4f}); in float: {kept}")
    verdict = "within" if search["met_tolerance"] else "NOT within"
    print(f"  {verdict} tolerance {search['tolerance']}; kept in float: "
          f"{', '.join(search['kept_in_float']) or 'none'}")
    if "note" in search:
        print(f"  note: {search['note']}")


def describe_settings(record: dict) -> str:
    """The settings that apply to the mode that ran (dynamic has no format or calibration)."""
    parts = [f"preset {record['preset']}"] if record["preset"] else []
    if record["mode"] == "static":
        parts += [f"format {record['format']}", f"activations {record['activation_type']}",
                  f"{record['calibration']} calibration on {record['calibration_samples']} "
                  "samples"]
    if record["mode"] in ("static", "dynamic"):
        parts += [f"per-channel {record['per_channel']}",
                  f"reduce-range {record['reduce_range']}"]
    if record["mode"] == "int4":
        parts.append(f"block size {record['block_size']}")
    if record["mode"] == "fp16":
        parts.append(f"fp32 inputs/outputs {record['keep_io_fp32']}")
    return ", ".join(parts)


def handle(args) -> int:
    from compress.quantize import QuantizeConfig, quantize

    config = QuantizeConfig(mode=args.mode, preset=args.preset, calibration=args.calibration,
                            format=args.format, activation_type=args.activation_type,
                            per_channel=args.per_channel, reduce_range=args.reduce_range,
                            symmetric=args.symmetric, calibration_samples=args.samples,
                            block_size=args.block_size, keep_io_fp32=args.keep_io_fp32,
                            accuracy_aware=args.accuracy_aware, tolerance=args.tolerance,
                            max_float_nodes=args.max_float_nodes)
    calibration = _calibration_from(args.data) if args.data else None
    evaluation = _evaluation_from(args.eval_data) if args.eval_data else None
    result = quantize(args.model, config, args.output, calibration=calibration,
                      evaluation=evaluation)
    record = result.record
    print(f"wrote {args.output}: {record['mode']} ({describe_settings(record)}), "
          f"{record['size_bytes_before']:,} -> {record['size_bytes']:,} bytes")
    if "accuracy_search" in record:
        _print_search(record["accuracy_search"])
    return 0
