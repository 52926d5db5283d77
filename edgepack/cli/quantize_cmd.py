"""``edgepack quantize``: ONNX Runtime post-training quantization with checks."""


def register(sub) -> None:
    from compress.quantize import METHODS, QuantizeConfig
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
    p.add_argument("--mode", "--method", dest="mode", default=None, metavar="METHOD",
                   help=f"how to quantize: {' | '.join(METHODS.names())} (default "
                        f"{QuantizeConfig.method})")
    add_config_flags(p, QuantizeConfig)
    readers = _methods_reading()
    notes = {name: f" [{', '.join(methods)}]" for name, methods in readers.items()}
    for spec in METHODS.specs():   # each method's own settings, flags made from its fields
        if spec.settings is not None:
            add_config_flags(p, spec.settings, skip=_flag_names(p), notes=notes)
    p.set_defaults(handler=handle)


def _methods_reading() -> dict[str, list[str]]:
    """For each method setting, the methods that have it (one flag serves them all)."""
    import dataclasses

    from compress.quantize import METHODS

    readers: dict[str, list[str]] = {}
    for spec in METHODS.specs():
        for f in dataclasses.fields(spec.settings) if spec.settings is not None else ():
            readers.setdefault(f.name, []).append(spec.name)
    return readers


def _flag_names(parser) -> set[str]:
    """Fields that already have a flag (a setting two methods share is one flag)."""
    return {action.dest for action in parser._actions}


def config_from_args(args):
    """The config the flags describe: the method, then every flag given, sorted by
    QuantizeConfig.from_dict into shared checks and the method's own settings (a flag of
    another method is refused by name)."""
    from compress.quantize import METHODS, QuantizeConfig
    from edgepack.cli.config_flags import config_kwargs

    given = config_kwargs(args, QuantizeConfig)
    for spec in METHODS.specs():
        if spec.settings is not None:
            given.update(config_kwargs(args, spec.settings))
    mode = args.mode or QuantizeConfig.method
    return QuantizeConfig.from_dict({"mode": mode, **given}, where="edgepack quantize")


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


def _print_candidates(search: dict) -> None:
    """The first candidate failed its output check: every one tried, and which was kept."""
    print(f"  search: the first candidate failed its output check; {len(search['candidates'])} "
          f"tried, kept: {search['chosen']}")
    for entry in search["candidates"]:
        speed = f", {entry['speedup']:.2f}x its input" if "speedup" in entry else ""
        cosine = "" if entry["min_cosine"] is None else f", mean cosine {entry['min_cosine']:.4f}"
        print(f"    {entry['label']} ({entry['method']}: {entry['settings']}){cosine}{speed}: "
              f"{entry['verdict']}")


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


def _is_decoder(path) -> bool:
    """A decoder with a KV cache, by the names Optimum and onnxruntime-genai give it."""
    import onnx

    try:
        names = {i.name for i in onnx.load(str(path), load_external_data=False).graph.input}
    except Exception:   # not readable here: the quantizer's own file check says why
        return False
    return "input_ids" in names and "past_key_values.0.key" in names


def _quantize_decoder(args) -> int:
    """int4 with search on a decoder: every default candidate judged on the built-in
    sentences (tokenized with the tokenizer.json beside the model), the fastest passing kept
    (:func:`compress.quantize.decoder_quantize.quantize_decoder`)."""
    from compress.quantize.decoder_quantize import quantize_decoder, sentence_windows

    windows, prompts = sentence_windows(args.model)
    record = quantize_decoder(args.model, args.output, eval_windows=windows, prompts=prompts,
                              keep_failed=args.keep_failed).record
    print(f"wrote {args.output}: {record['chosen']}, {record['size_bytes_before']:,} -> "
          f"{record['size_bytes']:,} bytes")
    print(f"  judged on {record['evaluation']['windows']} windows of built-in sentences; "
          f"{len(record['candidates'])} candidates:")
    for entry in record["candidates"]:
        speed = f", {entry['speedup']:.2f}x" if "speedup" in entry else ""
        quality = (f" (perplexity ratio {entry['perplexity_ratio']:.4f}, top-1 "
                   f"{entry['top1_agreement']:.4f}{speed})" if "perplexity_ratio" in entry
                   else "")
        print(f"    {entry['label']}{quality}: {entry['verdict']}")
    return 0


def handle(args) -> int:
    from compress.quantize import quantize
    from core.output_paths import check_distinct, check_onnx_output

    inputs = [args.model, args.data, args.eval_data]
    check_onnx_output(args.output, inputs=inputs, flag="-o/--output", overwrite=args.overwrite)
    if args.keep_failed:
        check_onnx_output(args.keep_failed, inputs=inputs, flag="--keep-failed",
                          overwrite=args.overwrite)
    check_distinct({"-o/--output": args.output, "--keep-failed": args.keep_failed})
    config = config_from_args(args)
    if config.method == "int4" and config.search and _is_decoder(args.model):
        return _quantize_decoder(args)
    calibration = _calibration_from(args.data) if args.data else None
    evaluation = _evaluation_from(args.eval_data) if args.eval_data else None
    result = quantize(args.model, config, args.output, calibration=calibration,
                      evaluation=evaluation, keep_failed=args.keep_failed)
    record = result.record
    if record["auto_choice"]:
        print(f"preset auto: {record['auto_choice']}")
    settings = record["describe"]
    if record["resolved"].get("calibration"):
        settings += f" on {record['calibration_samples']} samples"
    print(f"wrote {args.output}: {record['mode']} ({settings}), "
          f"{record['size_bytes_before']:,} -> {record['size_bytes']:,} bytes")
    if "candidate_search" in record:
        _print_candidates(record["candidate_search"])
    if "accuracy_search" in record:
        _print_search(record["accuracy_search"])
    _print_checks(record)
    return 0
