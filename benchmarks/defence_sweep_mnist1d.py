"""Adversarial fine-tuning settings on the demo's prune stage: clean and PGD accuracy.

Each setting (one JSON object per argument: the prune stage's ``adversarial`` table plus
``epochs`` and ``transfer``, the stage's ``finetune_epochs`` and
``finetune_transfer_samples``; beyond the demo's 16,000 transfer inputs more are generated)
runs the demo's prune stage, through :func:`edgepack.compress.prune.prune`
as a recipe would, on the distilled student of a finished ``edgepack demo`` run, and is
measured against the first ``--samples`` held-out inputs with white-box PGD (10 steps, one
random start, seed 0) at eps 0.1 input standard deviations; the baseline is the run's own
pruned model. An empty table (``{}``) is plain fine-tuning with the same epochs and inputs.

    python benchmarks/defence_sweep_mnist1d.py --run RUN \\
        '{"epochs": 6, "transfer": 16000, "eps": 0.2, "steps": 7, "loss": "trades", "beta": 1}'

Only the torch models are attacked (the full comparison, ONNX and int8 files included, is
benchmarks/robustness_mnist1d.py). Figures: docs/robustness.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.robustness.attacks.pgd import pgd  # noqa: E402
from benchmarks.robustness_mnist1d import with_transfer_inputs  # noqa: E402
from edgepack.compress.kd import collect  # noqa: E402
from edgepack.compress.prune import prune  # noqa: E402
from edgepack.pipeline.recipe_runner import demo_teacher  # noqa: E402
from edgepack.pipeline.teacher import build_model  # noqa: E402
from edgepack.export.weights import load_weights  # noqa: E402


def clean_and_pgd(model, x, y, eps: float) -> tuple[float, float]:
    """Accuracy on ``x`` and on its PGD copies (10 steps, seed 0; eps in x's std)."""
    model.eval()
    attacked = pgd(model, x, y, eps * float(x.std()), steps=10, seed=0)
    with torch.no_grad():
        return (float((model(x).argmax(-1) == y).float().mean()),
                float((model(attacked).argmax(-1) == y).float().mean()))


def defended(student, prune_config, setting: dict, data, teacher):
    """The student pruned by the demo's stage with ``setting``; seconds of the stage."""
    setting = dict(setting)
    config = dataclasses.replace(prune_config, finetune_epochs=setting.pop("epochs"),
                                 finetune_transfer_samples=setting.pop("transfer", 0),
                                 adversarial=setting)
    model, started = copy.deepcopy(student), time.perf_counter()
    prune(model, config, next(iter(data["evaluation"]))[0][:1], data=data, teacher=teacher,
          progress=False)
    return model, time.perf_counter() - started


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished `edgepack demo` run folder")
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("settings", nargs="+", help="JSON: adversarial table + epochs, transfer")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe, data, teacher = demo_teacher()
    data = with_transfer_inputs(recipe, data, max(json.loads(text).get("transfer", 0)
                                                  for text in args.settings))
    spec = recipe.stages[0].student
    shape = build_model(spec["build"], dict(spec["args"]), None)
    run = Path(args.run)
    student = load_weights(copy.deepcopy(shape), run / "01-distill" / "model.safetensors")
    plain = load_weights(copy.deepcopy(shape), run / "02-prune" / "model.safetensors")
    x, y = collect(data["evaluation"])
    x, y = x[:args.samples], y[:args.samples]
    base = clean_and_pgd(plain, x, y, args.eps)
    print(f"first {len(y)} held-out inputs, PGD at eps {args.eps}; 1 torch thread")
    print("| setting | clean | PGD | vs the demo's pruned model | seconds |\n|---|---|---|---|---|")
    print(f"| the demo's prune stage ({recipe.stages[1].finetune_epochs} epochs, plain) | "
          f"{base[0]:.3f} | {base[1]:.3f} | | |")
    for text in args.settings:
        model, seconds = defended(student, recipe.stages[1], json.loads(text), data, teacher)
        clean, robust = clean_and_pgd(model, x, y, args.eps)
        print(f"| `{text}` | {clean:.3f} | {robust:.3f} | clean {100 * (clean - base[0]):+.1f}, "
              f"PGD {100 * (robust - base[1]):+.1f} | {seconds:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
