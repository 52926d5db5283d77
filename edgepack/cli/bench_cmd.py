"""``edgepack bench``: latency, accuracy, memory and size of ONNX models."""


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark ONNX models on an execution provider")
    p.add_argument("models", nargs="+", help=".onnx files (timed interleaved)")
    p.add_argument("--provider", default="cpu", help="cpu, cuda, or an ONNX Runtime provider name")
    p.add_argument("--profile", default=None, help="edge (1 thread, no spinning) | server")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (0: ORT decides)")
    p.add_argument("--inter-op-threads", type=int, default=None)
    p.add_argument("--parallel", action="store_true", help="ORT_PARALLEL execution mode")
    p.add_argument("--no-spin", action="store_true", help="turn thread spin-waiting off")
    p.add_argument("--graph-optimization", default="all", help="disable | basic | extended | all")
    p.add_argument("--no-cpu-fallback", action="store_true",
                   help="fail instead of running unsupported nodes on the CPU")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--shape", action="append", default=[], metavar="NAME=D1,D2",
                   help="fix a symbolic input shape, e.g. input_ids=1,128 (repeatable)")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--min-runs", type=int, default=50)
    p.add_argument("--min-time", type=float, default=0.5, help="minimum timed seconds per model")
    p.add_argument("--data", default=None, help="evaluation .npz (inputs + labels or reference)")
    p.add_argument("--json", default=None, help="write results as JSON here")
    p.add_argument("--markdown", default=None, help="write a Markdown table here")
    p.add_argument("--plot", default=None, help="write accuracy vs latency PNG here")
    p.set_defaults(handler=handle)


def config_from_args(args):
    from bench.inputs import parse_shape_overrides
    from bench.runner import PROFILES, BenchConfig

    settings = dict(PROFILES[args.profile]) if args.profile else {}
    if args.profile and args.profile not in PROFILES:
        raise ValueError(f"unknown --profile {args.profile!r}; expected one of {', '.join(PROFILES)}")
    explicit = {"threads": args.threads, "inter_op_threads": args.inter_op_threads}
    settings.update({k: v for k, v in explicit.items() if v is not None})
    if args.parallel:
        settings["sequential"] = False
    if args.no_spin:
        settings["spin_wait"] = False
    return BenchConfig(provider=args.provider, graph_optimization=args.graph_optimization,
                       no_cpu_fallback=args.no_cpu_fallback, batch=args.batch,
                       warmup=args.warmup, min_runs=args.min_runs, min_time_s=args.min_time,
                       shapes=parse_shape_overrides(args.shape), **settings)


def handle(args) -> int:
    from bench.report import results_table, tradeoff_plot
    from bench.runner import PROFILES, bench
    from export.files import atomic_write_json, atomic_write_text, check_output_file

    if args.profile and args.profile not in PROFILES:
        raise ValueError(f"unknown --profile {args.profile!r}; expected one of "
                         f"{', '.join(PROFILES)}")
    for path in (args.json, args.markdown, args.plot):
        if path:
            check_output_file(path)
    config = config_from_args(args)
    results = bench(args.models, config, data=args.data)
    print(results_table(results))
    for r in results:
        if r.get("warning"):
            print(f"warning: {r['model']}: {r['warning']}")
    if args.json:
        atomic_write_json(args.json, results)
    if args.markdown:
        atomic_write_text(args.markdown, results_table(results, markdown=True) + "\n")
    if args.plot:
        tradeoff_plot(results, args.plot)
    return 0
