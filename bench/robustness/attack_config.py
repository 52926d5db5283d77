"""What a robustness evaluation runs: the ``[robustness]`` table of a recipe, as a dataclass.

``eps`` lists the L-infinity budgets in units of the evaluation inputs' standard deviation,
so one setting means the same on any data scale (0.1: each input value may move by a tenth
of the data's spread). Every attack runs at every epsilon on the same ``samples`` inputs.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from edgepack.bench.robustness.attacks import ATTACKS as REGISTRY
from edgepack.core.checks import check_budget, check_choice, check_finite_fields, did_you_mean

ATTACKS = REGISTRY.names()   # every registered attack (bench/robustness/attacks/), in order


@dataclass
class RobustnessConfig:
    """Attacks, budgets and the attribution-drift check of one evaluation.

    - ``noise``: a random sign at every input value, scaled to eps (the control: an attack
      that does no better than this has found nothing);
    - ``fgsm`` / ``pgd``: white-box, crafted on the torch model (the artifact's own, or the
      model it was exported from) and run through the artifact (a *transfer* attack for
      ONNX-only stages such as an int8 model);
    - ``square``: black-box Square Attack on the artifact's scores through ONNX Runtime,
      at most ``query_budget`` model calls per sample.
    """

    eps: tuple[float, ...] = (0.05, 0.1)  # L-infinity budgets, in input standard deviations
    samples: int = 256                # evaluation inputs attacked; 0 turns robustness off
    attacks: tuple[str, ...] = field(default_factory=REGISTRY.names)
    query_budget: int = 200           # Square Attack: model calls per sample at most
    pgd_steps: int = 10
    seed: int = 0
    attribution_samples: int = 64     # inputs whose saliency maps are compared to the teacher's
    attribution_threshold: float = 0.5   # mean Spearman rho below this flags a stage

    def __post_init__(self):
        check_finite_fields(self, "robustness")
        self.eps = tuple(float(e) for e in self.eps)
        self.attacks = tuple(self.attacks)
        if any(not e > 0 for e in self.eps):
            raise ValueError(f"robustness.eps must all be > 0, got {list(self.eps)}")
        for attack in self.attacks:
            check_choice("robustness", "attacks", attack, REGISTRY.names())
        for name in ("samples", "attribution_samples"):
            if getattr(self, name) < 0:
                raise ValueError(f"robustness.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("query_budget", "pgd_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"robustness.{name} must be >= 1, got {getattr(self, name)}")
            check_budget("robustness", name, getattr(self, name), "steps")
        if not -1.0 <= self.attribution_threshold <= 1.0:
            raise ValueError("robustness.attribution_threshold is a rank correlation; expected "
                             f"a number in [-1, 1], got {self.attribution_threshold}")

    @property
    def enabled(self) -> bool:
        return self.samples > 0 and bool(self.eps) and bool(self.attacks)

    def to_dict(self) -> dict:
        """Plain TOML/JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


def parse_epsilons(text: str, flag: str = "--robustness") -> tuple[float, ...]:
    """``"0.05,0.1"`` -> ``(0.05, 0.1)``; anything else is one clear ``ValueError``."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        values = ()
    if not values or any(not (v > 0 and math.isfinite(v)) for v in values):
        raise ValueError(f"{flag} {text!r} is not valid; expected positive numbers separated "
                         "by commas, e.g. 0.05,0.1 (budgets in input standard deviations)")
    return values


def parse_attacks(text: str, flag: str = "--attacks") -> tuple[str, ...]:
    """``"noise,square"`` -> ``("noise", "square")``, each a registered attack."""
    known = REGISTRY.names()
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if not names:
        raise ValueError(f"{flag} {text!r} is empty; expected some of {', '.join(known)}")
    for name in names:
        if name not in known:
            raise ValueError(f"{flag} {text!r}: unknown attack {name!r}"
                             f"{did_you_mean(name, known)}; expected some of "
                             f"{', '.join(known)}")
    return names
