"""``edgepack demo``: the built-in MNIST-1D recipe, end to end, offline."""

import time

from edgepack.cli.logs import add_log_flags, configure_logging


def register(sub) -> None:
    p = sub.add_parser("demo", help="run the built-in MNIST-1D recipe end to end (offline)")
    p.add_argument("--out", default=None,
                   help="run folder (default: runs/demo-<date>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    add_log_flags(p)
    p.set_defaults(handler=handle)


def handle(args) -> int:
    from edgepack.pipeline import distributed
    from edgepack.pipeline.outcome import check_outcome
    from edgepack.cli.run_cmd import print_summary
    from edgepack.pipeline.recipe_runner import run_demo

    out = args.out or time.strftime("runs/demo-%Y%m%d-%H%M%S")
    progress = configure_logging(args)
    start = time.perf_counter()
    report = run_demo(out, resume=args.resume, progress=progress)
    if distributed.rank() == 0:
        print_summary(report, out, time.perf_counter() - start)
    check_outcome(report)   # a run that kept nothing to deploy: exit 1, every reason named
    return 0
