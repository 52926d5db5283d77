"""``edgepack quantize``: ONNX Runtime post-training quantization with checks."""


def register(sub) -> None:
    from compress.quantize import QuantizeConfig
    from edgepack.cli.config_flags import add_config_flags

    p = sub.add_parser("quantize", help="quantize an ONNX model (dynamic, static, fp16, int4)")
    p.add_argument("model", help="input .onnx")
    p.add_argument("-o", "--output", required=True, help="output .onnx")
    p.add_argument("--data", default=None,
                   help="calibration data (.npz, one array per input); its last "
                        "--held-out-fraction of rows is kept for the output check")
    p.add_argument("--eval-data", default=None,
                   help="held-out .npz for the output check (with labels and --tolerance: "
                        "the top-1 accuracy drop is checked too)")
    p.add_argument("--keep-failed", default=None, metavar="PATH",
                   help="write a model that fails a check here (nothing is written otherwise)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file that edgepack did not write")
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
        verdict = "passed" if step["passed"] else "failed"
        print(f"  step {index}: output check {verdict} (score {step['score']:.4f}); in "
              f"float: {kept}")
    print(f"  accuracy-aware: kept in float: {', '.join(search['kept_in_float']) or 'none'}")
    if "note" in search:
        print(f"  note: {search['note']}")


def _print_checks(record: dict) -> None:
    from compress.quantize.output_check import describe as describe_outputs
    from compress.quantize.speed_check import describe as describe_speed

    check = record["output_check"]
    print(f"  output check passed on {record['held_out']['rows']} rows of "
          f"{record['held_out']['source']}: {describe_outputs(check['outputs'])}")
    speed = record["speed_check"]
    print(f"  speed check: {describe_speed(None if 'skipped' in speed else speed)}")
    latency = record.get("latency_aware")
    if isinstance(latency, dict) and latency["kept_float"]:  # (the setting, when it did not run)
        kept = ", ".join(f"{op} x{n}" for op, n in latency["kept_float_by_op"].items())
        print(f"  latency-aware: {len(latency['kept_float'])} nodes kept in float, slower in "
              f"int8 here ({kept})")


def describe_settings(record: dict) -> str:
    """The settings that apply to the mode that ran (dynamic has no format or calibration)."""
    parts = [f"preset {record['preset']}"] if record["preset"] not in ("", "none") else []
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
    from core.output_paths import check_distinct, check_onnx_output
    from edgepack.cli.config_flags import config_kwargs

    inputs = [args.model, args.data, args.eval_data]
    check_onnx_output(args.output, inputs=inputs, flag="-o/--output", overwrite=args.overwrite)
    if args.keep_failed:
        check_onnx_output(args.keep_failed, inputs=inputs, flag="--keep-failed",
                          overwrite=args.overwrite)
    check_distinct({"-o/--output": args.output, "--keep-failed": args.keep_failed})
    config = QuantizeConfig(**config_kwargs(args, QuantizeConfig))
    if config.auto_choice:
        print(f"preset auto: {config.auto_choice}")
    calibration = _calibration_from(args.data) if args.data else None
    evaluation = _evaluation_from(args.eval_data) if args.eval_data else None
    result = quantize(args.model, config, args.output, calibration=calibration,
                      evaluation=evaluation, keep_failed=args.keep_failed)
    record = result.record
    print(f"wrote {args.output}: {record['mode']} ({describe_settings(record)}), "
          f"{record['size_bytes_before']:,} -> {record['size_bytes']:,} bytes")
    if "accuracy_search" in record:
        _print_search(record["accuracy_search"])
    _print_checks(record)
    return 0
