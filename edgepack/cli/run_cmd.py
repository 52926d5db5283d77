"""``edgepack run RECIPE.toml``: a recipe end to end into a run folder."""

import time

from edgepack.cli.logs import add_log_flags, configure_logging


def register(sub) -> None:
    p = sub.add_parser("run", help="run a TOML recipe")
    p.add_argument("recipe", help="recipe file (TOML)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    add_log_flags(p)
    p.set_defaults(handler=handle)


def print_summary(report: dict, out, seconds: float) -> None:
    from bench.report import results_table

    rows = [{"name": "teacher", **report["teacher"]}] + report["stages"]
    print(results_table(rows))
    env = report["env"]
    print(f"\n{env['cpu']}; ONNX Runtime {env['onnxruntime']} "
          f"{report['stages'][0].get('provider', 'CPUExecutionProvider') if report['stages'] else ''}"
          f", threads {report['bench']['threads']}, batch {report['bench']['batch']}")
    print(f"final artifact: {report.get('final_artifact')}")
    print(f"run folder: {out} (report.json, report.md, tradeoff.png, manifest.json); "
          f"{seconds:.0f} s")


def refuse_multiprocess() -> None:
    """A whole run benchmarks and writes one run folder: it is one process, not a torchrun job."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ValueError("edgepack run/demo is a single process (it benchmarks and writes one "
                         "run folder); train on several processes from your own script under "
                         "torchrun, e.g. examples/distill_torchrun.py")


def handle(args) -> int:
    from edgepack.recipe import load_recipe

    refuse_multiprocess()
    from edgepack.runner import run_recipe

    recipe = load_recipe(args.recipe)  # checked before anything is written
    out = args.out or time.strftime(f"runs/{recipe.name}-%Y%m%d-%H%M%S")
    progress = configure_logging(args)
    start = time.perf_counter()
    report = run_recipe(recipe, out, resume=args.resume, progress=progress)
    print_summary(report, out, time.perf_counter() - start)
    return 0
