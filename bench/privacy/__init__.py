"""What a deployed model leaks about its training data: membership inference.

It measures, so it lives with the benchmark and runs without the pipeline:

- :mod:`edgepack.bench.privacy.membership_scores`: per-example membership scores from a model's logits: the loss
  attack (Yeom et al. 2018), the confidence and entropy attacks, and an offline LiRA-style
  score calibrated on reference models trained on other data (Carlini et al. 2022);
- :mod:`edgepack.bench.privacy.metrics`: ROC AUC, TPR at a fixed FPR, balanced accuracy at a threshold
  fitted on the other half of the data, and bootstrap intervals for all three;
- :func:`evaluate_membership`: every attack on one model through ONNX Runtime, on a member
  and a non-member set checked first by :func:`check_member_sets`;
- :mod:`edgepack.bench.privacy.privacy_report`: the report's table and plot.
"""

from edgepack.bench.privacy.config import ATTACKS, MIN_SAMPLES, PrivacyConfig
from edgepack.bench.privacy.membership import (MemberSets, check_member_sets, evaluate_membership,
                                               load_member_sets)

__all__ = ["ATTACKS", "MIN_SAMPLES", "MemberSets", "PrivacyConfig", "check_member_sets",
           "evaluate_membership", "load_member_sets"]
