"""Privacy on MNIST-1D: a DP-SGD teacher against its non-DP twin, and membership inference
shown to move (issue 27's targets).

Three models, all read from the two example recipes (nothing hard-coded here):

- ``examples/privacy_dp.toml``: the teacher trained with DP-SGD (opacus) at epsilon <= 8,
  delta = 1e-5 on 40,000 private samples; its student distilled on a public transfer set
  only, exported and quantized to int8 on public calibration inputs. The run's report gives
  epsilon, the guarantee per artifact and the membership figures of every row.
- the DP teacher's **non-DP twin**: the same architecture, data, epochs and seed, trained
  the ordinary way (AdamW at ``--twin-lr``), so the accuracy DP-SGD costs is measured side by
  side, both models evaluated by the same function on the same held-out set.
- ``examples/privacy_overfit.toml``: a non-DP teacher over-fitted on 800 samples, so the
  loss attack has something to find (the measurement is shown to move).

Targets: the DP teacher within 5 points of the twin's accuracy at epsilon <= 8; the DP
run's distilled student and its int8 file at loss-attack ROC AUC <= 0.55; the over-fitted
teacher's >= 0.6. A figure is printed only when both of its sides are valid: a teacher near
chance is not a baseline.

    python benchmarks/privacy_mnist1d.py [--dp-run DIR] [--overfit-run DIR] [--out DIR]

``--dp-run`` / ``--overfit-run`` read finished ``edgepack run`` folders of the two examples
instead of running them (each run trains its teacher once; the cache keeps it). Figures
(with the machine they came from): docs/privacy.md and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.chance import chance_accuracy, near_chance  # noqa: E402
from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.compress.distill_baseline import binomial_se  # noqa: E402
from edgepack.compress.trainer import accuracy  # noqa: E402
from edgepack.pipeline.recipe import load_recipe  # noqa: E402
from edgepack.pipeline.recipe_runner import load_data, run_recipe, seed_everything  # noqa: E402
from edgepack.pipeline.teacher import prepare_teacher, prepare_teacher_with_record  # noqa: E402

DP_RECIPE = REPO / "examples" / "privacy_dp.toml"
OVERFIT_RECIPE = REPO / "examples" / "privacy_overfit.toml"
MAX_GAP = 0.05          # the DP teacher within 5 points of its twin
MAX_EPSILON = 8.0
MAX_PRIVATE_AUC = 0.55  # the DP run's student and int8 file
MIN_OVERFIT_AUC = 0.60  # the over-fitted teacher


def run_or_read(recipe_path: Path, run_dir: str | None, out_root: Path) -> tuple[dict, float]:
    """The report of a finished run folder, or of a run made now (and its wall time)."""
    if run_dir:
        return json.loads((Path(run_dir) / "report.json").read_text()), 0.0
    out = out_root / recipe_path.stem
    started = time.perf_counter()
    report = run_recipe(recipe_path, out, progress=False)
    return report, time.perf_counter() - started


def loss_auc(row: dict) -> tuple[float, list[float]]:
    loss = row["privacy"]["attacks"]["loss"]
    return loss["auc"], loss["auc_interval"]


def twin_accuracies(recipe_path: Path, twin_lr: float) -> dict:
    """The DP teacher (from the cache its run filled) and its non-DP twin, side by side."""
    recipe = load_recipe(recipe_path)
    seed_everything(recipe.seed)
    data = load_data(recipe)
    dp_teacher, record = prepare_teacher_with_record(recipe.model, recipe.data, data,
                                                     recipe.seed, recipe.base_dir,
                                                     progress=False)
    twin_spec = dataclasses.replace(recipe.model, dp={}, lr=twin_lr)
    started = time.perf_counter()
    twin = prepare_teacher(twin_spec, recipe.data, data, recipe.seed, recipe.base_dir,
                           progress=False)
    labels = [int(y) for _, y in data["evaluation"].dataset]
    return {"dp": accuracy(dp_teacher, data["evaluation"]),
            "twin": accuracy(twin, data["evaluation"]), "record": record,
            "samples": len(labels), "chance": chance_accuracy(labels),
            "twin_seconds": time.perf_counter() - started,
            "epochs": recipe.model.train_epochs}


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dp-run", help="a finished run folder of examples/privacy_dp.toml")
    parser.add_argument("--overfit-run",
                        help="a finished run folder of examples/privacy_overfit.toml")
    parser.add_argument("--out", help="where the two runs go (default: a new temp folder)")
    parser.add_argument("--twin-lr", type=float, default=0.01,
                        help="the non-DP twin's learning rate (AdamW, the teacher default)")
    args = parser.parse_args(argv)
    out_root = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="privacy-bench-"))

    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores), "
          f"flags {' '.join(cpu['flags']) or 'none found'}")
    dp_report, dp_seconds = run_or_read(DP_RECIPE, args.dp_run, out_root)
    over_report, over_seconds = run_or_read(OVERFIT_RECIPE, args.overfit_run, out_root)
    side = twin_accuracies(DP_RECIPE, args.twin_lr)
    bench = dp_report["bench"]
    print(f"membership attacks through ONNX Runtime on the CPU, threads {bench['threads']}, "
          f"batch {bench['batch']}; runs: DP {dp_seconds:.0f} s, over-fit "
          f"{over_seconds:.0f} s, twin training {side['twin_seconds']:.0f} s "
          "(0 s: read from a run folder or the cache)\n")

    failed = []
    record = side["record"]
    eps = record["epsilon"] if record else None
    se = binomial_se(side["twin"], side["samples"])
    print(f"teachers on {side['samples']:,} held-out samples, {side['epochs']} epochs each "
          f"(chance {side['chance']:.3f}):")
    print(f"  DP-SGD teacher   accuracy {side['dp']:.4f}   epsilon {eps} at delta "
          f"{record['delta'] if record else '?'} (noise multiplier "
          f"{record['noise_multiplier']:.3f})" if record else "  DP teacher: no DP record")
    print(f"  non-DP twin      accuracy {side['twin']:.4f}   (+/- {se:.4f} one binomial SE)")
    valid = all(not near_chance(side[k], side["chance"], side["samples"]) for k in ("dp", "twin"))
    if not valid or record is None:
        print("  no gap is given: a teacher is near chance, or the DP record is missing")
        failed.append("DP teacher within 5 points")
    else:
        gap = side["twin"] - side["dp"]
        ok = gap <= MAX_GAP and eps <= MAX_EPSILON
        print(f"  gap {gap * 100:.2f} points at epsilon {eps:g}: target <= {MAX_GAP * 100:g} "
              f"points at epsilon <= {MAX_EPSILON:g}: {verdict(ok)}")
        failed += [] if ok else ["DP teacher within 5 points"]

    print("\nloss-attack ROC AUC [95% bootstrap interval], members vs non-members:")
    rows = [("DP teacher", dp_report["teacher"], None)]
    rows += [(f"DP run {s['name']}", s, MAX_PRIVATE_AUC) for s in dp_report["stages"]
             if s["kind"] in ("distill", "quantize") and "privacy" in s]
    rows += [("over-fitted teacher", over_report["teacher"], MIN_OVERFIT_AUC)]
    rows += [(f"over-fit run {s['name']}", s, None) for s in over_report["stages"]
             if "privacy" in s and s["kind"] != "export"]
    for label, row, target in rows:
        auc, (low, high) = loss_auc(row)
        gap = row["privacy"]["member_accuracy"] - row["privacy"]["non_member_accuracy"]
        line = (f"  {label:<28} {auc:.3f} [{low:.3f}, {high:.3f}]   accuracy members - "
                f"non-members {gap:+.3f}")
        if target is not None:
            ok = auc <= target if target == MAX_PRIVATE_AUC else auc >= target
            line += f"   target {'<=' if target == MAX_PRIVATE_AUC else '>='} {target}: " \
                    f"{verdict(ok)}"
            failed += [] if ok else [f"{label} AUC"]
        print(line)
    for name, line in dp_report["privacy"]["guarantees"].items():
        print(f"  guarantee, {name}: {line}")
    print("\nall targets met" if not failed else f"\ntargets not met: {', '.join(failed)}")
    return 0 if not failed else 1


if __name__ == "__main__":
    raise SystemExit(main())
