"""``edgepack quantize``: ONNX Runtime post-training quantization with checks."""


def register(sub) -> None:
    from compress.quantize import QuantizeConfig
    from edgepack.cli.config_flags import add_config_flags

    p = sub.add_parser("quantize", help="quantize an ONNX model (dynamic, static, fp16, int4)")
    p.add_argument("model", help="input .onnx")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--data", default=None,
                   help="calibration data (.npz, one array per input; also used for the "
                        "NaN/Inf check)")
    p.add_argument("--eval-data", default=None,
                   help="evaluation .npz for --accuracy-aware (with labels: top-1 accuracy; "
                        "without: cosine similarity to the fp32 outputs)")
    add_config_flags(p, QuantizeConfig)
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
    from core.files import check_not_input
    from edgepack.cli.config_flags import config_kwargs

    check_not_input(args.output, [args.model, args.data, args.eval_data], "-o/--output")
    config = QuantizeConfig(**config_kwargs(args, QuantizeConfig))
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
