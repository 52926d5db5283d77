"""Robustness of the demo's models on MNIST-1D: attacks on each artifact, and the defence.

Models: the demo teacher, its distilled student, the student pruned with the demo's prune
stage, and the same prune stage with adversarial fine-tuning (``adversarial = {eps = 0.1,
steps = 5, ratio = 0.5}``); each exported to ONNX and statically quantized to int8 (QDQ).
Every ONNX file is attacked through ONNX Runtime on the first ``--samples`` held-out inputs:
random-sign noise (the control), FGSM and PGD crafted on the torch model (white-box for
fp32 files, a transfer attack from the fp32 parent for int8 files), and the black-box
Square Attack on the file's own scores (``--queries`` per sample). eps is in input standard
deviations.

Targets (issue 16): FGSM/PGD agree with an independent implementation (IBM's
adversarial-robustness-toolbox, ART) within 1 point at each eps; the black-box attack lowers
the int8 model's accuracy at least as much as the transfer attack; adversarial fine-tuning
raises PGD accuracy at eps 0.1 by >= 10 points at a clean cost <= 2 points.

    pip install --no-deps --target .art adversarial-robustness-toolbox==1.20.1 six  # optional
    python benchmarks/robustness_mnist1d.py --art .art [--run DEMO_RUN_DIR]

``--quick`` shortens the demo's training (distill 5 epochs on 10,000 transfer samples;
prune fine-tuning 4 epochs on 5,000): the same stages and settings otherwise, for a busy
machine. ``--run`` takes the distilled and pruned models from a finished ``edgepack demo`` run folder
(the demo's own models) instead of distilling and pruning them again here.
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

from bench.robustness import RobustnessConfig, evaluate_robustness, robustness_session  # noqa: E402
from bench.robustness.report import robustness_table  # noqa: E402
from compress.kd import collect  # noqa: E402
from compress.prune import prune  # noqa: E402
from compress.quantize import quantize  # noqa: E402
from compress.distill import distill  # noqa: E402
from edgepack.runner import demo_teacher  # noqa: E402
from edgepack.teacher import build_model  # noqa: E402
from export.torch_export import ExportConfig, export_onnx  # noqa: E402

DEFENCE = {"eps": 0.1, "steps": 5, "ratio": 0.5}


def distilled_student(recipe, data, teacher):
    config = recipe.stages[0]
    torch.manual_seed(config.seed)
    student = build_model(config.student["build"], dict(config.student["args"]), None)
    distill(teacher, student, config, data, progress=False)
    return student.eval()


def demo_run_models(run: Path, recipe, student_like):
    """The distilled and pruned students a finished demo run saved."""
    from export.weights import load_weights

    student = load_weights(copy.deepcopy(student_like), run / "01-distill" / "model.safetensors")
    pruned_model = load_weights(copy.deepcopy(student_like), run / "02-prune" / "model.safetensors")
    return student.eval(), pruned_model.eval()


def pruned(student, config, data, teacher):
    model = copy.deepcopy(student)
    start = time.perf_counter()
    record = prune(model, config, next(iter(data["evaluation"]))[0][:1], data=data,
                   teacher=teacher, progress=False).record
    return model.eval(), record, time.perf_counter() - start


def art_accuracies(model, x, y, eps_values, steps, session) -> dict:
    """FGSM and PGD from ART on ``model``, evaluated through ``session`` like ours."""
    from art.attacks.evasion import FastGradientMethod, ProjectedGradientDescent
    from art.estimators.classification import PyTorchClassifier

    classifier = PyTorchClassifier(model=model, loss=torch.nn.CrossEntropyLoss(),
                                   input_shape=x.shape[1:], nb_classes=10)
    scale = float(x.std())
    predict = lambda a: session.run(None, {"input": a.astype(np.float32)})[0].argmax(1)  # noqa: E731
    out = {"fgsm": {}, "pgd": {}}
    for eps in eps_values:
        budget = eps * scale
        fgsm = FastGradientMethod(classifier, norm=np.inf, eps=budget, batch_size=512)
        pgd = ProjectedGradientDescent(classifier, norm=np.inf, eps=budget,
                                       eps_step=2.5 * budget / steps, max_iter=steps,
                                       num_random_init=1, batch_size=512, verbose=False)
        for name, attack in (("fgsm", fgsm), ("pgd", pgd)):
            out[name][str(eps)] = float((predict(attack.generate(x=x, y=y)) == y).mean())
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--art", default=None, help="folder holding adversarial-robustness-toolbox")
    parser.add_argument("--run", default=None, help="a finished `edgepack demo` run folder")
    parser.add_argument("--quick", action="store_true", help="shorter distill and fine-tuning")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = RobustnessConfig(eps=(0.05, 0.1, 0.2), samples=args.samples,
                              query_budget=args.queries)
    recipe, data, teacher = demo_teacher()
    if args.quick:
        recipe.stages[0] = dataclasses.replace(recipe.stages[0], epochs=5,
                                               transfer_samples=10_000)
        recipe.stages[1] = dataclasses.replace(recipe.stages[1], finetune_epochs=4,
                                               finetune_transfer_samples=5_000)
    if args.run:
        config0 = recipe.stages[0]
        shape = build_model(config0.student["build"], dict(config0.student["args"]), None)
        student, plain = demo_run_models(Path(args.run), recipe, shape)
        plain_s = None
    else:
        student = distilled_student(recipe, data, teacher)
        plain, _, plain_s = pruned(student, recipe.stages[1], data, teacher)
    defended_config = dataclasses.replace(recipe.stages[1], adversarial=DEFENCE)
    defended, defended_record, defended_s = pruned(student, defended_config, data, teacher)
    # the int8 files are attacked, not judged on speed: keep them even where no faster
    int8_config = dataclasses.replace(recipe.stages[3], allow_slower=True)
    inputs, labels = collect(data["evaluation"])
    x, y = inputs.numpy(), labels.numpy()
    torch_models = {"teacher": teacher, "student": student, "pruned": plain,
                    "pruned+adv": defended}
    rows, art = [], {}
    with tempfile.TemporaryDirectory() as folder:
        for name, model in torch_models.items():
            fp32 = Path(folder) / f"{name}.onnx"
            export_onnx(model, ExportConfig(), inputs[:1], fp32, parity_inputs=inputs[:8])
            files = {name: fp32}
            if name.startswith("pruned"):
                files[f"{name} int8"] = quantize(fp32, int8_config, Path(folder) /
                                                 f"{name}.int8.onnx",
                                                 calibration=data["calibration"]).artifact
            for label, path in files.items():
                session = robustness_session(path)
                start = time.perf_counter()
                result = evaluate_robustness(session, x, y, config, source=model,
                                             crafted_on="fp32 parent" if "int8" in label else
                                             "the model itself")
                rows.append({"name": label, "robustness": result,
                             "seconds": time.perf_counter() - start})
            if args.art:
                sys.path.insert(0, str(Path(args.art).resolve()))
                art[name] = art_accuracies(model, x[:args.samples], y[:args.samples],
                                           config.eps, config.pgd_steps,
                                           robustness_session(fp32))
    print(f"MNIST-1D, first {args.samples} of {len(y)} held-out samples; eps in input standard "
          f"deviations (1 = {rows[0]['robustness']['scale']:.3f}); Square Attack at most "
          f"{args.queries} queries per sample; PGD {config.pgd_steps} steps, random start\n")
    d, p = recipe.stages[0], recipe.stages[1]
    origin = f"from {args.run}" if args.run else (
        f"distill {d.epochs} epochs on {d.transfer_samples} transfer samples, prune ratio "
        f"{p.ratio} with {p.finetune_epochs} fine-tuning epochs on "
        f"{p.finetune_transfer_samples} transfer samples" + (" (--quick)" if args.quick else ""))
    print(f"models: demo teacher; student and pruned {origin}\n")
    print(robustness_table(rows, "model"))
    for row in rows:
        print(f"  {row['name']}: {row['seconds']:.1f} s for all attacks")
    if art:
        print("\nFGSM / PGD accuracy, ours vs ART (same eps, steps, step size; both run "
              "through the same ONNX file):")
        for name, theirs in art.items():
            ours = next(r["robustness"] for r in rows if r["name"] == name)
            for attack in ("fgsm", "pgd"):
                cells = [f"eps {e}: {ours[attack][e]:.3f} vs {theirs[attack][e]:.3f} "
                         f"({100 * (ours[attack][e] - theirs[attack][e]):+.1f} pt)"
                         for e in theirs[attack]]
                print(f"  {name:10s} {attack.upper():4s} " + "; ".join(cells))
    effect = defended_record["adversarial"]
    plain_time = "(the demo run's)" if plain_s is None else f"{plain_s:.0f} s"
    print(f"\nDefence {DEFENCE} on the demo prune stage: prune + fine-tuning {plain_time} -> "
          f"{defended_s:.0f} s ({effect['craft_seconds']:.0f} s crafting PGD examples)")
    for label, model in (("plain", plain), ("adversarial", defended)):
        rob = next(r["robustness"] for r in rows if r["name"] == ("pruned" if label == "plain"
                                                                  else "pruned+adv"))
        print(f"  {label:12s} clean {rob['clean']:.4f}  PGD eps 0.1 {rob['pgd']['0.1']:.4f}  "
              f"Square eps 0.1 {rob['square']['0.1']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
