"""``edgepack bench``: latency, accuracy, memory and size of ONNX models.

Each flag maps onto one :class:`bench.runner.BenchConfig` field; the command calls
:func:`bench.bench` once and writes the table (stdout), JSON, Markdown and plot it asked for.
"""


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark ONNX models on an execution provider")
    p.add_argument("models", nargs="+", help=".onnx files (timed interleaved)")
    p.add_argument("--provider", default="cpu",
                   help="cpu, cuda, or any ONNX Runtime provider name (default cpu)")
    p.add_argument("--profile", default=None,
                   help="named settings: edge (1 thread, no spinning), edge-2cores, server")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (0: ORT decides)")
    p.add_argument("--inter-op-threads", type=int, default=None)
    p.add_argument("--parallel", action="store_true", help="ORT_PARALLEL execution mode")
    p.add_argument("--no-spin", action="store_true", help="turn thread spin-waiting off")
    p.add_argument("--graph-optimization", default="all", help="disable | basic | extended | all")
    p.add_argument("--no-cpu-fallback", action="store_true",
                   help="fail instead of running nodes the provider cannot run on the CPU")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2",
                   help="fix a symbolic input shape, e.g. input_ids=1,128 (repeatable)")
    p.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    p.add_argument("--min-runs", type=int, default=50, help="timed runs at least (default 50)")
    p.add_argument("--min-time", type=float, default=0.5,
                   help="timed seconds per model at least (default 0.5)")
    p.add_argument("--max-runs", type=int, default=100_000, help="timed runs at most")
    p.add_argument("--no-io-binding", action="store_true",
                   help="on CUDA, time with host copies (session.run on numpy arrays)")
    p.add_argument("--data", default=None,
                   help="evaluation .npz: one array per input, plus labels or reference")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--markdown", default=None, help="write a Markdown report here")
    p.add_argument("--plot", default=None, help="write accuracy vs latency PNG here (needs labels)")
    p.set_defaults(handler=handle)


def config_from_args(args):
    """The BenchConfig the flags describe: a profile's settings, then explicit flags."""
    from bench.inputs import parse_shape_overrides
    from bench.runner import BenchConfig

    settings = {"provider": args.provider, "graph_optimization": args.graph_optimization,
                "no_cpu_fallback": args.no_cpu_fallback, "batch": args.batch,
                "warmup": args.warmup, "min_runs": args.min_runs, "min_time_s": args.min_time,
                "max_runs": args.max_runs, "io_binding": not args.no_io_binding,
                "shapes": parse_shape_overrides(args.shape)}
    explicit = {"threads": args.threads, "inter_op_threads": args.inter_op_threads}
    settings.update({k: v for k, v in explicit.items() if v is not None})
    if args.parallel:
        settings["sequential"] = False
    if args.no_spin:
        settings["spin_wait"] = False
    if args.profile:
        return BenchConfig.with_profile(args.profile, **settings)
    return BenchConfig(**settings)


def _check_plot_has_labels(args) -> None:
    from bench.inputs import load_npz

    if args.plot and (not args.data or "labels" not in load_npz(args.data)):
        raise ValueError("--plot draws accuracy against latency; it needs --data with a "
                         "'labels' array")


def _environment() -> dict:
    import onnxruntime as ort

    from bench.envinfo import cpu_info

    return {**cpu_info(), "onnxruntime": ort.__version__}


def handle(args) -> int:
    import sys

    from bench.report import markdown_report, results_table, tradeoff_plot
    from bench.runner import bench
    from core.files import atomic_write_json, atomic_write_text, check_output_file

    for path in (args.json, args.markdown, args.plot):
        if path:
            check_output_file(path)
    config = config_from_args(args)
    _check_plot_has_labels(args)
    results = bench(args.models, config, data=args.data)
    env = _environment()
    print(f"{env['cpu']}, {config.provider}, threads {config.threads}, batch {config.batch}, "
          f"{config.warmup} warm-up + at least {config.min_runs} runs and {config.min_time_s} s "
          "per model, interleaved")
    print(results_table(results))
    for r in results:
        if r.get("warning"):
            print(f"warning: {r['model']}: {r['warning']}", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, results)
    if args.markdown:
        atomic_write_text(args.markdown, markdown_report(results, env))
    if args.plot:
        tradeoff_plot(results, args.plot)
    return 0
