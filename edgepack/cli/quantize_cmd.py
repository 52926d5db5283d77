"""``edgepack quantize``: ONNX Runtime post-training quantization with checks."""


def register(sub) -> None:
    from edgepack.compress.quantize import METHODS, QuantizeConfig
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

    from edgepack.compress.quantize import METHODS

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
    from edgepack.compress.quantize import METHODS, QuantizeConfig
    from edgepack.cli.config_flags import config_kwargs

    given = config_kwargs(args, QuantizeConfig)
    for spec in METHODS.specs():
        if spec.settings is not None:
            given.update(config_kwargs(args, spec.settings))
    mode = args.mode or QuantizeConfig.method
    return QuantizeConfig.from_dict({"mode": mode, **given}, where="edgepack quantize")


def _calibration_from(path):
    from edgepack.bench.inputs import load_npz

    arrays = load_npz(path)
    return {k: v for k, v in arrays.items() if k not in ("labels", "reference")}


def _evaluation_from(path):
    from edgepack.bench.inputs import load_npz

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
    from edgepack.compress.quantize.output_check import describe as describe_outputs
    from edgepack.compress.quantize.speed_check import describe as describe_speed

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


# What the decoder search reads of the shared flags; any other given flag is refused (the
# output check's cosine and norm bounds, calibration counts: an encoder's measures).
DECODER_FLAGS = ("search", "speed_check", "allow_slower", "speed_threads",
                 "min_top1_agreement", "max_perplexity_ratio", "provider")
GATE_FLAGS = ("min_top1_agreement", "max_perplexity_ratio")   # LMGate's own names
DECODER_METHODS = ("int4", "dynamic")


def _decoder_request(args, config) -> dict:
    """What the command line asks of the decoder search, every flag either used or refused
    (``ValueError`` naming the flags)."""
    from edgepack.compress.quantize import QuantizeConfig
    from edgepack.bench.lm_quality import LMGate
    from edgepack.compress.quantize.decoder_candidates import (DYNAMIC_SETTINGS,
                                                               requested_candidates)
    from edgepack.cli.config_flags import config_kwargs

    model = args.model
    if config.method not in DECODER_METHODS:
        raise ValueError(f"{model} is a decoder with a KV cache: quantize makes int4 "
                         f"(--mode int4) or dynamic int8 (--mode dynamic) candidates for it, "
                         f"judged by perplexity on held-out text; --mode {config.method} is "
                         f"not one of them")
    shared = config_kwargs(args, QuantizeConfig)
    settings = config_kwargs(args, config.spec.settings)
    refused = sorted(set(shared) - set(DECODER_FLAGS))
    if config.method == "dynamic":
        refused += sorted(set(settings) - set(DYNAMIC_SETTINGS))
    if refused:
        flags = ", ".join("--" + name.replace("_", "-") for name in refused)
        raise ValueError(f"{model} is a decoder with a KV cache, judged by perplexity and "
                         f"top-1 agreement on held-out text: {flags} "
                         f"{'does' if len(refused) == 1 else 'do'} not apply to it; drop "
                         f"{'it' if len(refused) == 1 else 'them'}")
    if config.provider != "cpu":
        raise ValueError(f"--provider {config.provider}: a decoder's candidates are judged "
                         f"and timed on the CPU execution provider only")
    candidates, how = requested_candidates(config.method, settings, config.search)
    gate = LMGate(**{name: shared[name] for name in GATE_FLAGS if name in shared})
    if args.data and not any(c.needs_calibration for c in candidates):
        from edgepack.compress.quantize.int4_algorithms import INT4_ALGORITHMS

        calibrated = [s.name for s in INT4_ALGORITHMS.specs() if s.needs_calibration]
        names = " and ".join(repr(name) for name in calibrated)
        flags = " or ".join(f"--algorithm {name}" for name in calibrated)
        raise ValueError(f"--data {args.data}: only {names} candidates read calibration "
                         f"windows, and none was asked for ({flags})")
    return {"candidates": candidates, "how": how, "gate": gate}


def _token_windows(path, flag: str) -> list[list[int]]:
    """The rows of ``input_ids`` in a .npz, as token windows."""
    from edgepack.bench.inputs import load_npz

    arrays = load_npz(path)
    ids = arrays.get("input_ids")
    if ids is None or ids.ndim != 2 or ids.shape[1] < 2 or ids.dtype.kind not in "iu":
        raise ValueError(f"{flag} {path}: a decoder reads an integer array 'input_ids' of "
                         f"shape (windows, tokens >= 2); found "
                         f"{', '.join(f'{k} {v.dtype}{list(v.shape)}' for k, v in arrays.items())}")
    return ids.astype("int64").tolist()


def _decoder_texts(args) -> tuple[list, list, str]:
    """Held-out windows and prompts: --eval-data's input_ids, or the built-in sentences."""
    from edgepack.compress.quantize.decoder_quantize import sentence_windows

    if args.eval_data:
        windows = _token_windows(args.eval_data, "--eval-data")
        if len(windows) < 3:
            raise ValueError(f"--eval-data {args.eval_data}: {len(windows)} windows; a "
                             f"decoder needs at least 3 (2 give the timed prompts)")
        return windows[:-2], [w[:max(1, len(w) // 4)] for w in windows[-2:]], args.eval_data
    windows, prompts = sentence_windows(args.model)
    return windows, prompts, "built-in sentences"


def _deploy_beside(source, output) -> list[str]:
    """The tokenizer and genai_config.json beside the output, as a recipe writes them; none
    when the output shares its input's folder (its genai_config.json names the input)."""
    from pathlib import Path

    from edgepack.export.genai import write_deploy_files

    source, output = Path(source), Path(output)
    if output.parent.resolve() == source.parent.resolve() or \
            not (source.parent / "tokenizer.json").is_file():
        return []
    return write_deploy_files(output, source.parent)


def _check_deploy_folder(source, output) -> None:
    """Refuse, before any work, an output folder holding deployment files edgepack would
    replace (a user's files are never overwritten)."""
    from pathlib import Path

    from edgepack.export.genai import GENAI_CONFIG, TOKENIZER_FILES

    source, output = Path(source), Path(output)
    if output.parent.resolve() == source.parent.resolve():
        return
    taken = [n for n in (*TOKENIZER_FILES, GENAI_CONFIG) if (output.parent / n).exists()
             and not _same_content(output.parent / n, source.parent / n)]
    if taken:
        raise ValueError(f"-o {output}: its folder already holds {', '.join(taken)}, which "
                         f"the deployment files beside a decoder would replace; write to an "
                         f"empty folder")


def _same_content(path, other) -> bool:
    try:
        return path.read_bytes() == other.read_bytes()
    except OSError:
        return False


def _quantize_decoder(args, config) -> int:
    """A decoder: the candidates the flags ask for, judged on held-out text (the built-in
    sentences tokenized with the tokenizer.json beside the model, or --eval-data), the
    fastest passing kept (:func:`edgepack.compress.quantize.decoder_quantize.quantize_decoder`), with
    the tokenizer and genai_config.json beside it."""
    from edgepack.compress.quantize.decoder_quantize import quantize_decoder

    request = _decoder_request(args, config)
    _check_deploy_folder(args.model, args.output)
    windows, prompts, source = _decoder_texts(args)
    calibration = _token_windows(args.data, "--data") if args.data else None
    record = quantize_decoder(
        args.model, args.output, eval_windows=windows, prompts=prompts,
        calibration_windows=calibration, candidates=request["candidates"],
        gate=request["gate"], threads=config.speed_threads, keep_failed=args.keep_failed,
        speed_check=config.speed_check, allow_slower=config.allow_slower).record
    deployed = _deploy_beside(args.model, args.output)
    print(f"wrote {args.output}: {record['chosen']}, {record['size_bytes_before']:,} -> "
          f"{record['size_bytes']:,} bytes")
    print(f"  judged on {record['evaluation']['windows']} windows of {source}; candidates: "
          f"{request['how']}:")
    for entry in record["candidates"]:
        speed = f", {entry['speedup']:.2f}x" if "speedup" in entry else ""
        quality = (f" (perplexity ratio {entry['perplexity_ratio']:.4f}, top-1 "
                   f"{entry['top1_agreement']:.4f}{speed})" if "perplexity_ratio" in entry
                   else "")
        print(f"    {entry['label']}{quality}: {entry['verdict']}")
    if deployed:
        print(f"  beside it: {', '.join(deployed)}")
    return 0


def handle(args) -> int:
    from edgepack.compress.quantize import quantize
    from edgepack.core.output_paths import check_distinct, check_onnx_output

    inputs = [args.model, args.data, args.eval_data]
    check_onnx_output(args.output, inputs=inputs, flag="-o/--output", overwrite=args.overwrite)
    if args.keep_failed:
        check_onnx_output(args.keep_failed, inputs=inputs, flag="--keep-failed",
                          overwrite=args.overwrite)
    check_distinct({"-o/--output": args.output, "--keep-failed": args.keep_failed})
    config = config_from_args(args)
    if _is_decoder(args.model):
        return _quantize_decoder(args, config)
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
