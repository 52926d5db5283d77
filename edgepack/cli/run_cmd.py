"""``edgepack run RECIPE.toml``: a recipe end to end into a run folder.

Under ``torchrun --nproc-per-node N -m edgepack run ...`` every rank trains; rank 0 alone
writes the run folder and prints the summary.
"""

import time
from pathlib import Path

from edgepack.cli.logs import add_log_flags, configure_logging


def register(sub) -> None:
    p = sub.add_parser("run", help="run a TOML recipe")
    p.add_argument("recipe", help="recipe file (TOML)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<name>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    add_log_flags(p)
    add_code_trust_flags(p)
    p.set_defaults(handler=handle)


def add_code_trust_flags(parser) -> None:
    """``--allow-any-builder`` and ``--trust-pickle``: what the user vouches for."""
    parser.add_argument("--allow-any-builder", action="store_true",
                        help="let the recipe name builders from any module, the standard "
                             "library included (a recipe is code: only for recipes you trust)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="RISK: allow unpickling, which runs any code the file holds: "
                             "loaders of pickled data (torch.load, numpy.load, pickle, "
                             "joblib...) as builders, pickles your builders and providers "
                             "read, and full unpickling of .pt weights; only for files you "
                             "trust")


def code_trust(args):
    """The trust the flags vouch for, while the command runs."""
    from edgepack.pipeline.user_code import trusting

    return trusting(any_builder=args.allow_any_builder, pickle=args.trust_pickle)


def folder_line(out, seconds: float) -> str:
    """The run folder and the reports it holds (the plots a run drew, not a fixed list)."""
    from edgepack.pipeline.run_folder import REPORT_PLOTS

    names = ["report.json", "report.md",
             *(name for name in REPORT_PLOTS if (Path(out) / name).is_file()), "manifest.json"]
    return f"run folder: {out} ({', '.join(names)}); {seconds:.0f} s"


def print_summary(report: dict, out, seconds: float) -> None:
    """The metric kind's table of every row, where it was measured, and the run folder."""
    from edgepack.pipeline.metric_kinds import kind_of_report
    from edgepack.pipeline.run_report import baseline_line, report_rows, teacher_warning

    print(kind_of_report(report).table(report_rows(report), False))
    env, bench = report["env"], report["bench"]
    provider = (report["stages"][0].get("provider") if report["stages"] else None) or \
        "CPUExecutionProvider"
    print(f"\n{env['cpu']}; ONNX Runtime {env['onnxruntime']} {provider}, threads "
          f"{bench['threads']}, batch {bench['batch']}")
    for line in [teacher_warning(report["teacher"])] + [baseline_line(s) for s in
                                                        report["stages"]]:
        if line:
            print(line)
    print(f"final artifact: {report.get('final_artifact')}")
    print(folder_line(out, seconds))


def handle(args) -> int:
    from edgepack.pipeline import distributed
    from edgepack.pipeline.outcome import check_outcome
    from edgepack.pipeline.recipe import load_recipe
    from edgepack.pipeline.recipe_runner import run_recipe

    with code_trust(args):
        recipe = load_recipe(args.recipe)  # checked before anything is written
        out = args.out or time.strftime(f"runs/{recipe.name}-%Y%m%d-%H%M%S")
        progress = configure_logging(args)
        start = time.perf_counter()
        report = run_recipe(recipe, out, resume=args.resume, progress=progress)
    if distributed.rank() == 0:
        print_summary(report, out, time.perf_counter() - start)
    check_outcome(report)   # a run that kept nothing to deploy: exit 1, every reason named
    return 0
