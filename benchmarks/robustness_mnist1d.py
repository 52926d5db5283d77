"""Robustness of the demo's models on MNIST-1D: attacks on each artifact, and the defence.

Models, all read from the demo's recipe (widths, stages and settings; nothing hard-coded):
the demo teacher, its distilled student, the student pruned by the demo's prune stage, and
the same prune stage with adversarial fine-tuning (``--defence``, by default
``adversarial = {eps = 0.2, steps = 7, loss = "trades", beta = 1}`` over ``--defence-epochs``
(6) fine-tuning epochs, on the labelled set plus ``--defence-transfer`` (40,000)
teacher-labelled transfer inputs (the demo makes 16,000; the rest are generated). When those epochs or inputs differ from the recipe's, the
plain prune stage is also run with as many, so the defence is judged against equal
fine-tuning, not only against the demo's.
Each pruned model is exported to ONNX and statically quantized to int8 (QDQ).

Every ONNX file is attacked through ONNX Runtime on the first ``--samples`` held-out inputs:
random-sign noise (the control), FGSM and PGD (10 steps, random start) crafted on the torch
model (white-box for fp32 files, a transfer attack from the fp32 parent for int8 files),
and the black-box Square Attack on the file's own scores (``--queries`` per sample, the
recipe's budget by default). eps is in input standard deviations.

The checks of issue 16:

- **ART agreement** (``--art .art``): FGSM and PGD against IBM's adversarial-robustness-
  toolbox set up like ours (benchmarks/art_reference.py: same eps, step ``2.5 eps / steps``,
  steps, L-infinity projection, one uniform random start, no clipping, cross-entropy on the
  true labels, eval mode), both evaluated through the same ONNX file. FGSM is deterministic;
  PGD is compared twice: from the same random start (a difference would be the algorithm's)
  and from independent starts, mean of ``--starts`` each (the sampling noise a user sees).
- **Black-box vs transfer on int8**: the Square Attack's accuracy at each budget of
  ``--query-curve`` beside the transfer FGSM/PGD accuracy, on each int8 file.
- **Defence**: clean and PGD accuracy at eps 0.1 with and without adversarial fine-tuning,
  and the fine-tuning's time.

    pip install --no-deps --target .art adversarial-robustness-toolbox==1.20.1 six  # optional
    python benchmarks/robustness_mnist1d.py --art .art [--run DEMO_RUN_DIR]

``--run`` takes the distilled and plain pruned models from a finished ``edgepack demo`` run
folder (the demo's own models) instead of distilling and pruning them again here.
``--quick`` shortens the demo's training (distill 5 epochs on 10,000 transfer samples).

Figures (2-core AMD EPYC, AVX2; the exact commands): docs/robustness.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.robustness import evaluate_robustness, robustness_session  # noqa: E402
from edgepack.bench.robustness.attacks.square import square_attack
from edgepack.bench.robustness.predictions import ort_predict  # noqa: E402
from edgepack.bench.robustness.robustness_report import robustness_table  # noqa: E402
from edgepack.bench.robustness.attacks import craft  # noqa: E402
from edgepack.compress.distill import distill  # noqa: E402
from edgepack.compress.kd import collect  # noqa: E402
from edgepack.compress.prune import prune  # noqa: E402
from edgepack.compress.quantize import quantize  # noqa: E402
from edgepack.pipeline.recipe_runner import demo_teacher, load_data  # noqa: E402
from edgepack.pipeline.teacher import build_model  # noqa: E402
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402

DEFENCE = "eps=0.2,steps=7,loss=trades,beta=1"   # chosen on the demo student (docs/robustness.md)
DEFENCE_EPOCHS = 6
DEFENCE_TRANSFER = 40_000   # teacher-labelled transfer inputs also fine-tuned on (the demo
                            # makes 16,000; more are generated when asked for)
EPS = (0.05, 0.1, 0.2)


def with_transfer_inputs(recipe, data: dict, wanted: int) -> dict:
    """The demo's data with at least ``wanted`` transfer inputs: the same labelled sets
    (same seed), a longer transfer set (its own seed) when the demo's is shorter."""
    if wanted <= recipe.data.args.get("transfer_samples", 0):
        return data
    bigger = dataclasses.replace(recipe.data, args={**recipe.data.args,
                                                    "transfer_samples": wanted})
    return load_data(dataclasses.replace(recipe, data=bigger))


def parse_defence(text: str) -> dict:
    """``"eps=0.2,steps=5,loss=trades,beta=1"`` -> the prune stage's ``adversarial`` table."""
    kinds = {"eps": float, "steps": int, "ratio": float, "loss": str, "beta": float}
    pairs = dict(part.split("=", 1) for part in text.split(","))
    return {key: kinds[key](value) for key, value in pairs.items()}


def student_shape(recipe):
    config = recipe.stages[0]
    return build_model(config.student["build"], dict(config.student["args"]), None)


def distilled_student(recipe, data, teacher):
    config = dataclasses.replace(recipe.stages[0], baseline_lrs=())   # the KD student only
    torch.manual_seed(config.seed)
    student = student_shape(recipe)
    distill(teacher, student, config, data, progress=False)
    return student.eval()


def pruned(student, config, data, teacher):
    """The student pruned and fine-tuned by ``config``; its record and seconds (wall, CPU)."""
    model = copy.deepcopy(student)
    wall, cpu = time.perf_counter(), time.process_time()
    record = prune(model, config, next(iter(data["evaluation"]))[0][:1], data=data,
                   teacher=teacher, progress=False).record
    return model.eval(), record, (time.perf_counter() - wall, time.process_time() - cpu)


def torch_models(args, recipe, data, teacher) -> tuple[dict, dict]:
    """{label: torch model} and {label: (wall, cpu) seconds of its prune stage}."""
    from edgepack.export.weights import load_weights

    prune_config = recipe.stages[1]
    if args.run:
        run, shape = Path(args.run), student_shape(recipe)
        student = load_weights(copy.deepcopy(shape), run / "01-distill" / "model.safetensors")
        plain = load_weights(copy.deepcopy(shape), run / "02-prune" / "model.safetensors")
        models, seconds = {"student": student.eval(), "pruned": plain.eval()}, {}
    else:
        student = distilled_student(recipe, data, teacher)
        plain, _, plain_s = pruned(student, prune_config, data, teacher)
        models, seconds = {"student": student, "pruned": plain}, {"pruned": plain_s}
    epochs = args.defence_epochs or prune_config.finetune_epochs
    extra = args.defence_transfer
    if (epochs, extra) != (prune_config.finetune_epochs, prune_config.finetune_transfer_samples):
        same = dataclasses.replace(prune_config, finetune_epochs=epochs,
                                   finetune_transfer_samples=extra)
        label = f"pruned {epochs}ep" + (f"+{extra // 1000}k" if extra else "")
        models[label], _, seconds[label] = pruned(student, same, data, teacher)
    defended = dataclasses.replace(prune_config, finetune_epochs=epochs,
                                   finetune_transfer_samples=extra,
                                   adversarial=parse_defence(args.defence))
    models["pruned+adv"], record, seconds["pruned+adv"] = pruned(student, defended, data,
                                                                 teacher)
    seconds["craft"] = record["adversarial"]["craft_seconds"]
    return {"teacher": teacher, **models}, seconds


def onnx_files(models: dict, folder: Path, recipe, data, example) -> dict:
    """{label: (onnx path, torch model attacks are crafted on)}; int8 for pruned models."""
    # the int8 files are attacked, not judged on speed: keep them even where no faster
    int8_config = dataclasses.replace(recipe.stages[3], allow_slower=True)
    files = {}
    for name, model in models.items():
        fp32 = folder / f"{name.replace(' ', '_')}.onnx"
        export_onnx(model, ExportConfig(), example[:1], fp32, parity_inputs=example[:8])
        files[name] = (fp32, model)
        if name.startswith("pruned"):
            int8 = quantize(fp32, int8_config, fp32.with_suffix(".int8.onnx"),
                            calibration=data["calibration"]).artifact
            files[f"{name} int8"] = (int8, model)
    return files


def art_crosscheck(files: dict, x, y, config, starts: int) -> list[str]:
    """Lines: ours vs ART, FGSM and PGD (same start; independent starts), per fp32 file."""
    from benchmarks import art_reference as ref

    scale, lines = float(x.std()), []
    for name, (path, model) in files.items():
        if "int8" in name:
            continue
        predict = ort_predict(robustness_session(path))
        acc = lambda a: float((predict(a).argmax(-1) == y).mean())  # noqa: E731
        estimator = ref.classifier(model, x.shape[1:], int(predict(x[:1]).shape[-1]))
        for eps in config.eps:
            budget, steps = eps * scale, config.pgd_steps
            fgsm = (acc(craft("fgsm", model, x, y, budget)),
                    acc(ref.art_fgsm(estimator, x, y, budget)))
            with ref.same_start(config.seed):
                same = (acc(craft("pgd", model, x, y, budget, steps, config.seed)),
                        acc(ref.art_pgd(estimator, x, y, budget, steps)))
            ours = [acc(craft("pgd", model, x, y, budget, steps, seed)) for seed in range(starts)]
            theirs = []
            for seed in range(starts):
                np.random.seed(seed)
                theirs.append(acc(ref.art_pgd(estimator, x, y, budget, steps)))
            lines.append(
                f"  {name:12s} eps {eps:<5} FGSM {fgsm[0]:.3f} vs {fgsm[1]:.3f} "
                f"({100 * (fgsm[0] - fgsm[1]):+.1f} pt) | PGD same start {same[0]:.3f} vs "
                f"{same[1]:.3f} ({100 * (same[0] - same[1]):+.1f} pt) | PGD {starts} starts "
                f"{np.mean(ours):.3f} [{min(ours):.3f}-{max(ours):.3f}] vs {np.mean(theirs):.3f} "
                f"[{min(theirs):.3f}-{max(theirs):.3f}] "
                f"({100 * (np.mean(ours) - np.mean(theirs)):+.1f} pt)")
    return lines


def query_curve(files: dict, rows: list[dict], x, y, config, budgets) -> list[str]:
    """Lines: Square Attack accuracy per query budget beside the transfer attacks, int8 files."""
    scale, lines = float(x.std()), []
    for name, (path, _) in files.items():
        if "int8" not in name:
            continue
        predict = ort_predict(robustness_session(path))
        rob = next(r["robustness"] for r in rows if r["name"] == name)
        for eps in config.eps:
            key, cells = str(eps), []
            for budget in budgets:
                wall = time.perf_counter()
                result = square_attack(predict, x, y, eps * scale, budget, seed=config.seed)
                cells.append(f"{budget}: {result['correct'].mean():.3f} "
                             f"({time.perf_counter() - wall:.0f} s)")
            lines.append(f"  {name:16s} eps {eps:<5} transfer FGSM {rob['fgsm'][key]:.3f} "
                         f"PGD {rob['pgd'][key]:.3f} | Square by budget " + ", ".join(cells))
    return lines


def defence_lines(rows: list[dict], seconds: dict, defence: str, epochs: int,
                  extra: int) -> list[str]:
    """Lines: clean, PGD and Square accuracy at eps 0.1, each plain pruned model against the
    defended one (torch-crafted PGD on fp32 files, transfer on int8), and the time it cost."""
    find = {r["name"]: r["robustness"] for r in rows}
    plain = [n for n in find if n.startswith("pruned") and "+adv" not in n and "int8" not in n]
    lines = [f"Defence adversarial = {{{defence}}} over {epochs} fine-tuning epochs, "
             f"{extra} transfer inputs added (accuracy at eps 0.1, plain -> defended):"]
    for suffix in ("", " int8"):
        adv = find["pruned+adv" + suffix]
        for name in plain:
            base = find[name + suffix]
            delta = {k: 100 * (adv[k]["0.1"] - base[k]["0.1"]) for k in ("pgd", "square")}
            lines.append(
                f"  {name + suffix:16s} clean {base['clean']:.4f} -> {adv['clean']:.4f} "
                f"({100 * (adv['clean'] - base['clean']):+.1f} pt); PGD "
                f"{base['pgd']['0.1']:.4f} -> {adv['pgd']['0.1']:.4f} ({delta['pgd']:+.1f} pt); "
                f"Square {base['square']['0.1']:.4f} -> {adv['square']['0.1']:.4f} "
                f"({delta['square']:+.1f} pt)")
    for name, spent in seconds.items():
        if name != "craft":
            lines.append(f"  {name} prune stage: {spent[0]:.0f} s wall, {spent[1]:.0f} s CPU")
    lines.append(f"  (of the defended stage's time, {seconds['craft']:.0f} s wall crafting PGD "
                 "examples)")
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=0,
                        help="Square Attack budget of the table (0: the recipe's)")
    parser.add_argument("--query-curve", default="100,200,500,1000",
                        help="Square Attack budgets compared with the transfer attack on int8")
    parser.add_argument("--art", default=None, help="folder holding adversarial-robustness-toolbox")
    parser.add_argument("--starts", type=int, default=3, help="PGD random starts per side (ART)")
    parser.add_argument("--run", default=None, help="a finished `edgepack demo` run folder")
    parser.add_argument("--defence", default=DEFENCE, help="the prune stage's adversarial table")
    parser.add_argument("--defence-epochs", type=int, default=DEFENCE_EPOCHS,
                        help="fine-tuning epochs of the defended prune stage (0: the recipe's)")
    parser.add_argument("--defence-transfer", type=int, default=DEFENCE_TRANSFER,
                        help="teacher-labelled transfer inputs added to the fine-tuning set of "
                             "the defended stage and of its equal-length plain control")
    parser.add_argument("--quick", action="store_true", help="shorter distillation")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe, data, teacher = demo_teacher()
    data = with_transfer_inputs(recipe, data, args.defence_transfer)
    config = dataclasses.replace(recipe.robustness, eps=EPS, samples=args.samples,
                                 query_budget=args.queries or recipe.robustness.query_budget)
    if args.quick:
        recipe.stages[0] = dataclasses.replace(recipe.stages[0], epochs=5,
                                               transfer_samples=10_000)
    if args.art:
        ref = __import__("benchmarks.art_reference", fromlist=["import_art"])
        ref.import_art(args.art)
    models, seconds = torch_models(args, recipe, data, teacher)
    inputs, labels = collect(data["evaluation"])
    x, y = inputs.numpy()[:args.samples], labels.numpy()[:args.samples]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        files = onnx_files(models, Path(folder), recipe, data, inputs)
        for label, (path, model) in files.items():
            crafted_on = "fp32 parent" if "int8" in label else "the model itself"
            result = evaluate_robustness(robustness_session(path), x, y, config, source=model,
                                         crafted_on=crafted_on)
            rows.append({"name": label, "robustness": result})
        curve = query_curve(files, rows, x, y, config,
                            [int(b) for b in args.query_curve.split(",") if b])
        art = art_crosscheck(files, x, y, config, args.starts) if args.art else []
    d, p = recipe.stages[0], recipe.stages[1]
    print(f"MNIST-1D, first {len(y)} of {len(labels)} held-out samples; eps in input standard "
          f"deviations (1 = {rows[0]['robustness']['scale']:.3f}); Square Attack at most "
          f"{config.query_budget} queries per sample; PGD {config.pgd_steps} steps, random "
          f"start; 1 torch thread, 1 ORT thread")
    origin = f"from {args.run}" if args.run else (
        f"distill {d.epochs} epochs on {d.transfer_samples} transfer samples"
        + (" (--quick)" if args.quick else ""))
    print(f"models: the demo recipe's teacher ({sum(t.numel() for t in teacher.parameters()):,}"
          f" params); student and pruned {origin}; prune ratio {p.ratio}, "
          f"{p.finetune_epochs} fine-tuning epochs\n")
    print(robustness_table(rows, "model"))
    for row in rows:
        rob = row["robustness"]
        print(f"  {row['name']}: {rob['seconds']:.1f} s wall, {rob['cpu_seconds']:.1f} s CPU "
              "for all attacks")
    print("\nBlack-box Square Attack vs transfer attacks on the int8 files (accuracy; "
          "lower = stronger attack):")
    print("\n".join(curve))
    if art:
        print("\nOurs vs ART (accuracy through the same ONNX file; same eps, steps, step size):")
        print("\n".join(art))
    epochs = args.defence_epochs or p.finetune_epochs
    print()
    print("\n".join(defence_lines(rows, seconds, args.defence, epochs, args.defence_transfer)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
