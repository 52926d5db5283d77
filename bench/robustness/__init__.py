"""Robustness of a model as deployed: attacks, the noise control, and attribution drift.

It measures, so it lives with the benchmark and runs without the pipeline:

- :func:`evaluate_robustness`: clean, random-sign-noise, FGSM/PGD (crafted on a torch
  model, run through the artifact) and black-box Square Attack (the artifact's scores only,
  through ONNX Runtime) accuracy at several epsilons, with the queries used;
- :mod:`edgepack.bench.robustness.attribution`: gradient x input and occlusion saliency maps, and
  their Spearman rank correlation with a teacher's;
- :mod:`edgepack.bench.robustness.attacks`: the attacks, one file each (a new one is one file);
- :func:`robustness_table` / :func:`robustness_plot`: the report's table and figure.

torch is imported only inside the functions that take gradients.
"""

from edgepack.bench.robustness.attack_config import (ATTACKS, RobustnessConfig, parse_attacks,
                                                     parse_epsilons)
from edgepack.bench.robustness.evaluate import (evaluate_robustness, not_applicable_reason,
                                                robustness_session)

__all__ = ["ATTACKS", "RobustnessConfig", "evaluate_robustness", "not_applicable_reason",
           "parse_attacks", "parse_epsilons", "robustness_session"]
