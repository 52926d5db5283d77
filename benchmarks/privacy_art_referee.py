"""Our membership attacks against IBM's adversarial-robustness-toolbox, same model and split.

The teachers of examples/privacy_overfit.toml (over-fitted: the attacks find something) and
examples/privacy_dp.toml (DP-SGD: they should not), from the cache their runs filled (or
trained here, the same way). Members and non-members are the runs' own (the first
``[privacy] samples`` training rows and as many of the provider's non-members). Each split
seed cuts both in halves (benchmarks/art_membership.py); ART's learned attacks fit on the
first halves and every AUC is taken on the second. Printed per teacher, attack pair and ART
attack model: the mean AUC of each side over ``--splits`` seeds, the mean difference and the
largest one.

    pip install --no-deps --target .art adversarial-robustness-toolbox==1.20.1 six
    python benchmarks/privacy_art_referee.py [--splits 5] [--models lr,rf,gb]

"lr" (logistic regression) on one score is a monotone function of it, so it ranks as one
threshold does: the like-for-like referee of our ``loss`` attack. On the 10-column
probability vector it is not (the ``confidence`` pair is judged with "rf"/"gb"). "rf" and
"gb" learn non-monotone rules and can find more than a threshold.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.art_membership import compare  # noqa: E402
from benchmarks.art_reference import import_art  # noqa: E402
from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.privacy import PrivacyConfig  # noqa: E402
from edgepack.pipeline.privacy_probe import member_sets  # noqa: E402
from edgepack.pipeline.recipe import load_recipe  # noqa: E402
from edgepack.pipeline.recipe_runner import load_data, seed_everything  # noqa: E402
from edgepack.pipeline.teacher import prepare_teacher  # noqa: E402
from edgepack.export.torch_export import ExportConfig, export_onnx  # noqa: E402

RECIPES = {"over-fitted teacher": REPO / "examples" / "privacy_overfit.toml",
           "DP-SGD teacher": REPO / "examples" / "privacy_dp.toml"}


def teacher_and_sets(recipe_path: Path, folder: Path):
    """The recipe's teacher, its ONNX session, and its run's members and non-members."""
    import onnxruntime as ort

    recipe = load_recipe(recipe_path)
    seed_everything(recipe.seed)
    data = load_data(recipe)
    model = prepare_teacher(recipe.model, recipe.data, data, recipe.seed, recipe.base_dir,
                            progress=False).eval()
    example = next(iter(data["evaluation"]))[0][:1]
    path = folder / f"{recipe_path.stem}.onnx"
    export_onnx(model, ExportConfig(), (example,), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    sets = member_sets(PrivacyConfig(samples=recipe.privacy.samples), data, [name])
    return (model, session, (sets.members[name].astype(np.float32), sets.member_labels),
            (sets.non_members[name].astype(np.float32), sets.non_member_labels))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--models", default="lr,rf,gb", help="ART attack_model_type values")
    parser.add_argument("--art", default=str(REPO / ".art"))
    args = parser.parse_args(argv)
    import_art(args.art)
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}), flags {' '.join(cpu['flags'])}; ours "
          "through ONNX Runtime (CPU EP), ART on the torch model; AUC on the held-out halves")
    folder = Path(tempfile.mkdtemp(prefix="art-referee-"))
    for label, recipe_path in RECIPES.items():
        model, session, members, non_members = teacher_and_sets(recipe_path, folder)
        print(f"\n{label} ({len(members[1])} members, {len(non_members[1])} non-members):")
        for attack_model in args.models.split(","):
            found = collections.defaultdict(list)
            for seed in range(args.splits):
                pairs, extra = compare(model, session, members, non_members, 10,
                                       attack_model=attack_model, seed=seed)
                for pair in pairs:
                    found[(pair["ours"], pair["art"])].append((pair["ours_auc"],
                                                               pair["art_auc"]))
                found[("loss", "black-box loss + label")].append((pairs[1]["ours_auc"], extra))
            for (ours, art), values in found.items():
                values = np.array(values)
                diff = values[:, 1] - values[:, 0]
                print(f"  {attack_model:<3} {ours:<10} vs ART {art:<24} ours "
                      f"{values[:, 0].mean():.4f}  ART {values[:, 1].mean():.4f}  difference "
                      f"{diff.mean():+.4f} (largest {np.abs(diff).max():.4f}, "
                      f"{args.splits} splits)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
