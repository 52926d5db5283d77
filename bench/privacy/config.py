"""What a membership-inference evaluation runs: the ``[privacy]`` table of a recipe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgepack.core.checks import check_budget, check_choice

# loss: Yeom et al. 2018; confidence / entropy: the top softmax probability and the
# prediction's entropy; lira: offline LiRA (Carlini et al. 2022), needs reference models
ATTACKS = ("loss", "correct", "confidence", "entropy", "lira")

# Below this many samples on a side, 1% FPR is less than one non-member and the bootstrap
# interval of the TPR there means nothing.
MIN_SAMPLES = 100
MAX_REFERENCES = 64


@dataclass
class PrivacyConfig:
    """Membership inference on every artifact: who attacks, on how many samples, how sure.

    ``samples``: members and as many non-members, per artifact (0 turns it off);
    ``references``: reference models the pipeline trains for the ``lira`` attack, each on its
    own data disjoint from both sets (0: no ``lira``); ``bootstrap``: resamples of the
    interval (a 95% percentile interval).
    """

    samples: int = 0
    attacks: tuple[str, ...] = ("loss", "confidence", "entropy")
    references: int = 0
    bootstrap: int = 200
    seed: int = 0

    def __post_init__(self):
        self.attacks = tuple(self.attacks)
        for attack in self.attacks:
            check_choice("privacy", "attacks", attack, ATTACKS)
        if not self.attacks:
            raise ValueError("privacy.attacks is empty; choose from " + ", ".join(ATTACKS))
        if 0 < self.samples < MIN_SAMPLES:
            raise ValueError(f"privacy.samples must be 0 (off) or >= {MIN_SAMPLES} (members "
                             f"and as many non-members; fewer leave no interval at 1% FPR), "
                             f"got {self.samples}")
        check_budget("privacy", "samples", self.samples, "samples")
        if not 0 <= self.references <= MAX_REFERENCES:
            raise ValueError(f"privacy.references must be in [0, {MAX_REFERENCES}] (each one "
                             f"a training run), got {self.references}")
        if self.bootstrap < 20:
            raise ValueError(f"privacy.bootstrap must be >= 20 resamples, got {self.bootstrap}")
        check_budget("privacy", "bootstrap", self.bootstrap, "resamples")
        if "lira" in self.attacks and self.references < 2 and self.enabled:
            raise ValueError("privacy.attacks includes 'lira', which is calibrated on "
                             "reference models: set privacy.references >= 2 (each one a "
                             "training run like the teacher's), or drop 'lira'")

    @property
    def enabled(self) -> bool:
        return self.samples > 0

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["attacks"] = list(self.attacks)
        return data
