"""``edgepack bench``: latency, accuracy, memory and size of ONNX models.

Each flag maps onto one :class:`edgepack.bench.runner.BenchConfig` field; the command calls
:func:`bench.bench` once and writes the table (stdout), JSON, Markdown and plot it asked for.
``--robustness`` adds attacks on each model (see :mod:`edgepack.cli.robustness_flags`);
``--privacy`` adds membership inference on each (see :mod:`edgepack.cli.privacy_flags`).
``--generate`` benchmarks decoder LLMs instead: prefill and decode speed through
:func:`edgepack.bench.generation.bench_generation` (see :func:`handle_generate`).
"""

from edgepack.cli import privacy_flags, robustness_flags

RENAMES = {"min_time_s": "min-time"}   # BenchConfig fields whose flag is named otherwise


def register(sub) -> None:
    from edgepack.bench.runner import BenchConfig
    from edgepack.cli.config_flags import add_config_flags

    p = sub.add_parser("bench", help="benchmark ONNX models on an execution provider")
    p.add_argument("models", nargs="+", help=".onnx files (timed interleaved)")
    p.add_argument("--profile", default=None,
                   help="named settings: edge (1 thread, no spinning), edge-2cores, server; "
                        "explicit flags win")
    add_config_flags(p, BenchConfig, renames=RENAMES)
    p.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2",
                   help="fix a symbolic input shape, e.g. input_ids=1,128 (repeatable)")
    p.add_argument("--data", default=None,
                   help="evaluation .npz: one array per input, plus labels or reference")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--markdown", default=None, help="write a Markdown report here")
    p.add_argument("--plot", default=None, help="write accuracy vs latency PNG here (needs labels)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file that edgepack did not write")
    robustness_flags.register(p)
    privacy_flags.register(p)
    _register_generate(p)
    p.set_defaults(handler=handle)


def _register_generate(p) -> None:
    from edgepack.core.checks import MAX_ROUNDS, MAX_TOKENS

    g = p.add_argument_group("decoder LLMs (--generate)")
    g.add_argument("--generate", action="store_true",
                   help="the models are decoder LLMs with a KV cache: measure prefill ms and "
                        "decode tokens/s on a standard English prompt, interleaved")
    g.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="folder holding the models' tokenizer.json (needed by --generate)")
    g.add_argument("--prompt-tokens", type=int, default=128, metavar="N",
                   help=f"prompt length in tokens, 1 to {MAX_TOKENS:,} (default 128)")
    g.add_argument("--new-tokens", type=int, default=32, metavar="N",
                   help=f"decode steps per run, never stopped at eos, 1 to {MAX_TOKENS:,}; "
                        "with the prompt, within the model's context and this machine's "
                        "memory (default 32)")
    g.add_argument("--rounds", type=int, default=5, metavar="N",
                   help=f"timed runs of every model, interleaved, 1 to {MAX_ROUNDS:,} "
                        "(default 5)")


def config_from_args(args):
    """The BenchConfig the flags describe: a profile's settings, then explicit flags."""
    from edgepack.bench.inputs import parse_shape_overrides
    from edgepack.bench.runner import BenchConfig
    from edgepack.cli.config_flags import config_kwargs

    settings = config_kwargs(args, BenchConfig, renames=RENAMES)
    if args.shape:
        settings["shapes"] = parse_shape_overrides(args.shape)
    if args.profile:
        return BenchConfig.with_profile(args.profile, **settings)
    return BenchConfig(**settings)


def _check_plot_has_labels(args) -> None:
    from edgepack.bench.inputs import load_npz

    if args.plot and (not args.data or "labels" not in load_npz(args.data)):
        raise ValueError("--plot draws accuracy against latency; it needs --data with a "
                         "'labels' array")


def _environment() -> dict:
    import onnxruntime as ort

    from edgepack.bench.envinfo import cpu_info

    return {**cpu_info(), "onnxruntime": ort.__version__}


OUTPUTS = (("--json", "json", ".json"), ("--markdown", "markdown", ".md"),
           ("--plot", "plot", ".png"))


def check_outputs(args) -> None:
    """Each output file: the right suffix, not an input, not a file edgepack did not write."""
    from edgepack.core.output_paths import check_distinct, check_output_path

    for flag, name, suffix in OUTPUTS:
        if getattr(args, name):
            check_output_path(getattr(args, name), inputs=[*args.models, args.data,
                                                           args.members, args.non_members,
                                                           *(args.references or [])], flag=flag,
                              suffixes=(suffix,), overwrite=args.overwrite)
    check_distinct({flag: getattr(args, name) for flag, name, _ in OUTPUTS})


# Flags of the tensor benchmark that mean nothing to --generate: refused, not ignored.
NOT_FOR_GENERATE = ("data", "markdown", "plot", "robustness", "shape", "privacy")


def check_generate_flags(args) -> None:
    """One line for each way ``--generate``'s flags can be wrong, before any model is read."""
    given = [f"--{name}" for name in NOT_FOR_GENERATE if getattr(args, name, None)]
    if args.batch not in (None, 1):
        given.append("--batch")
    if given:
        raise ValueError(f"{', '.join(given)}: not used by --generate, which times prefill "
                         f"and decoding at batch 1 on a built-in prompt")
    from edgepack.core.checks import check_budget

    for flag, value, unit in (("--prompt-tokens", args.prompt_tokens, "tokens"),
                              ("--new-tokens", args.new_tokens, "tokens"),
                              ("--rounds", args.rounds, "rounds")):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
        check_budget("", flag, value, unit)
    if not args.tokenizer:
        raise ValueError("--generate needs --tokenizer DIR, the folder holding the models' "
                         "tokenizer.json")
    if args.json:
        from edgepack.core.output_paths import check_output_path

        check_output_path(args.json, inputs=[*args.models, args.tokenizer], flag="--json",
                          suffixes=(".json",), overwrite=args.overwrite)


def handle_generate(args) -> int:
    """``edgepack bench --generate``: one call of :func:`edgepack.bench.generation.bench_generation`,
    a table on stdout, the results as JSON when ``--json`` is given."""
    import sys

    from edgepack import __version__

    from edgepack.bench.generation import bench_generation, generation_table, noisy_warning
    from edgepack.core.files import atomic_write_json

    check_generate_flags(args)
    config = config_from_args(args)
    warmup = args.warmup if args.warmup is not None else 1
    stats = bench_generation(args.models, args.tokenizer, prompt_tokens=args.prompt_tokens,
                             new_tokens=args.new_tokens, rounds=args.rounds,
                             options=config.session_options(), warmup=warmup)
    print(f"{_environment()['cpu']}, {config.provider}, threads {config.threads}, batch 1, "
          f"prompt {args.prompt_tokens} tokens then {args.new_tokens} decode steps, {warmup} "
          f"warm-up + {args.rounds} rounds per model, interleaved")
    print(generation_table(stats))
    for s in stats:
        if s.noisy:
            print(f"warning: {noisy_warning(s)}", file=sys.stderr)
    if args.json:
        # latency_ms (the bench JSON's contract, DESIGN.md) is the per-token decode latency
        atomic_write_json(args.json, [{**s.to_dict(), "latency_ms": s.token_ms,
                                       "kind": "generation", "batch": 1,
                                       "edgepack_version": __version__} for s in stats])
    return 0


def handle(args) -> int:
    import sys

    from edgepack import __version__

    from edgepack.bench.privacy.privacy_report import privacy_notes, privacy_table
    from edgepack.bench.report import markdown_report, results_table, tradeoff_plot
    from edgepack.bench.robustness.robustness_report import robustness_notes, robustness_table
    from edgepack.bench.runner import bench
    from edgepack.core.files import atomic_write_json, atomic_write_text
    from edgepack.core.output_paths import MARKDOWN_MARK

    if args.generate:
        return handle_generate(args)
    if args.tokenizer:
        raise ValueError("--tokenizer is read by --generate only; add --generate to "
                         "benchmark decoder LLMs")
    check_outputs(args)
    config = config_from_args(args)
    robustness = robustness_flags.config_from_args(args)
    privacy = privacy_flags.config_from_args(args)
    _check_plot_has_labels(args)
    source = robustness_flags.source_model(args) if robustness else None
    if privacy is not None:   # the sets are checked before anything is timed
        from edgepack.bench.privacy import load_member_sets

        load_member_sets(args.members, args.non_members)
    results = bench(args.models, config, data=args.data)
    if robustness is not None:
        for result, attacked in zip(results, robustness_flags.evaluate_models(
                args.models, args.data, robustness, source)):
            result["robustness"] = attacked
    if privacy is not None:
        for result, found in zip(results, privacy_flags.evaluate_models(args, privacy)):
            result["privacy"] = found
    env = _environment()
    print(f"{env['cpu']}, {config.provider}, threads {config.threads}, batch {config.batch}, "
          f"{config.warmup} warm-up + at least {config.min_runs} runs and {config.min_time_s} s "
          "per model, interleaved")
    print(results_table(results))
    if robustness is not None:
        print("\n" + robustness_table(results, "model").rstrip())
    if privacy is not None:
        print("\n" + privacy_table(results, "model").rstrip())
    for r in results:
        if r.get("warning"):
            print(f"warning: {r['model']}: {r['warning']}", file=sys.stderr)
    failed = [f"{r['model']} (output {', '.join(map(repr, r.get('nonfinite_outputs', [])))})"
              for r in results if r.get("failed")]
    if failed:  # a failed check: nothing is written
        print(f"edgepack: the outputs of {', '.join(failed)} hold NaN or Inf; no accuracy is "
              "reported and nothing was written", file=sys.stderr)
        return 1
    if args.json:
        atomic_write_json(args.json, [{**r, "edgepack_version": __version__} for r in results])
    if args.markdown:
        markdown = f"{MARKDOWN_MARK}\n" + markdown_report(results, env)
        if robustness is not None:
            markdown += "\n" + robustness_table(results, "model") + "\n" + robustness_notes(results)
        if privacy is not None:
            markdown += "\n" + privacy_table(results, "model") + "\n" + privacy_notes(results)
        atomic_write_text(args.markdown, markdown)
    if args.plot:
        tradeoff_plot(results, args.plot)
    return 0
