"""ART's membership-inference attacks beside ours, on the same model and the same split.

An independent referee for ``edgepack.bench.privacy`` (ART is not a dependency of edgepack; install
it beside the repository as benchmarks/art_reference.py says). Used by
benchmarks/privacy_art_referee.py and tests/bench/test_privacy_art.py.

The split: members and non-members are each cut in two halves by one seeded permutation.
ART's learned attack (``MembershipInferenceBlackBox``) fits on the first halves; every
figure, ours and ART's, is the ROC AUC on the second halves, so the two sides see the very
same rows. Ours run through ONNX Runtime on the exported file, ART's on the torch model
(the same weights): agreement also says the two runtimes give the same scores.

The pairs compared, each an attack and its counterpart:

- ``correct`` (Yeom et al.'s gap attack) and ART's ``MembershipInferenceBlackBoxRuleBased``
  (a member if classified right): the same rule, so the AUCs must be equal;
- ``loss`` (one threshold on the true label's loss) and ART's ``MembershipInferenceBlackBox``
  learned on the loss ART's classifier computes (``compute_loss``), the label withheld;
- ``confidence`` (one threshold on the top probability) and ART's black-box attack learned
  on the softmax of ART's predictions, the label withheld.

Withheld, because given the label as a feature ART's learned attack fits a threshold per
class, which is a different (stronger) attack than a threshold on one score: that figure is
reported beside the pairs (``black-box loss + label``), not compared. A learned attack may
also find a little less than a threshold: it fits on half the rows. The attack model is a
random forest (``attack_model_type = "rf"``; "gb" is reported too): ART's default network
("nn") takes only as many features as classes, so it cannot learn on the loss alone.
"""

from __future__ import annotations

import numpy as np

from edgepack.bench.privacy.metrics import roc_auc
from edgepack.bench.privacy.membership_scores import SCORES

PAIRS = (("correct", "rule-based"), ("loss", "black-box loss"),
         ("confidence", "black-box prediction"))
EXTRA = "black-box loss + label"   # reported, not paired: a per-class threshold


def halves(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, test rows): one seeded permutation cut in two."""
    order = np.random.default_rng(seed).permutation(rows)
    return order[:rows // 2], order[rows // 2:]


def our_aucs(logits_m: np.ndarray, labels_m: np.ndarray, logits_n: np.ndarray,
             labels_n: np.ndarray) -> dict[str, float]:
    """Our threshold attacks' ROC AUC on (members, non-members)."""
    return {attack: roc_auc(SCORES[attack](logits_m, labels_m),
                            SCORES[attack](logits_n, labels_n))
            for attack, _ in PAIRS}


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)


def art_aucs(estimator, fit: tuple, test: tuple, attack_model: str = "rf",
             seed: int = 0) -> dict[str, float]:
    """ART's attacks' ROC AUC on ``test``; the black-box ones fitted on ``fit``.

    ``fit`` and ``test``: (member inputs, member labels, non-member inputs, non-member
    labels), numpy. ``attack_model``: ART's ``attack_model_type`` ("rf", "gb", "lr", ...).
    Every feature is computed by ART's classifier, and the AUC of ART's scores is
    scikit-learn's, so no code of ours scores ART's side.
    """
    from art.attacks.inference.membership_inference import (MembershipInferenceBlackBox,
                                                            MembershipInferenceBlackBoxRuleBased)
    from sklearn.metrics import roc_auc_score

    truth = np.r_[np.ones(len(test[1])), np.zeros(len(test[3]))]

    def member_probability(found) -> np.ndarray:
        found = np.asarray(found, dtype=np.float64)
        return found[:, 1] if found.ndim == 2 and found.shape[1] == 2 else found.reshape(-1)

    def auc(scores_m, scores_n) -> float:
        return float(roc_auc_score(truth, np.r_[member_probability(scores_m),
                                               member_probability(scores_n)]))

    features = {   # ART's own label-free features of (inputs, labels)
        "black-box loss": lambda x, y: estimator.compute_loss(x, y).reshape(-1, 1),
        "black-box prediction": lambda x, y: _softmax(estimator.predict(x))}
    rule = MembershipInferenceBlackBoxRuleBased(estimator)
    out = {"rule-based": auc(rule.infer(test[0], test[1], probabilities=True),
                             rule.infer(test[2], test[3], probabilities=True))}
    for name, feature in features.items():
        np.random.seed(seed)   # scikit-learn's attack models draw from numpy's global state
        torch_seed(seed)       # and ART's network from torch's
        attack = MembershipInferenceBlackBox(estimator, input_type="prediction",
                                             attack_model_type=attack_model)
        attack.fit(pred=feature(fit[0], fit[1]).astype(np.float32),
                   test_pred=feature(fit[2], fit[3]).astype(np.float32))
        out[name] = auc(*(attack.infer(None, None, probabilities=True,
                                       pred=feature(x, y).astype(np.float32))
                          for x, y in ((test[0], test[1]), (test[2], test[3]))))
    np.random.seed(seed)
    torch_seed(seed)
    labelled = MembershipInferenceBlackBox(estimator, input_type="loss",
                                           attack_model_type=attack_model)
    labelled.fit(x=fit[0], y=fit[1], test_x=fit[2], test_y=fit[3])
    out[EXTRA] = auc(labelled.infer(test[0], test[1], probabilities=True),
                     labelled.infer(test[2], test[3], probabilities=True))
    return out


def torch_seed(seed: int) -> None:
    import torch

    torch.manual_seed(seed)


def compare(model, session, members: tuple, non_members: tuple, classes: int,
            attack_model: str = "rf", seed: int = 0) -> tuple[list[dict], float]:
    """Each pair of :data:`PAIRS` on the second halves: ours, ART's and the difference; and
    ART's labelled black-box loss attack (:data:`EXTRA`).

    ``members`` / ``non_members``: (inputs, labels) as numpy, inputs shaped like the model's
    one input; ``session``: an ONNX Runtime session of the same model.
    """
    from benchmarks.art_reference import classifier
    from edgepack.bench.privacy.membership import session_logits

    (x_m, y_m), (x_n, y_n) = members, non_members
    fit_m, test_m = halves(len(y_m), seed)
    fit_n, test_n = halves(len(y_n), seed + 1)
    name = session.get_inputs()[0].name
    ours = our_aucs(session_logits(session, {name: x_m[test_m]}), y_m[test_m],
                    session_logits(session, {name: x_n[test_n]}), y_n[test_n])
    estimator = classifier(model, x_m.shape[1:], classes)
    theirs = art_aucs(estimator, (x_m[fit_m], y_m[fit_m], x_n[fit_n], y_n[fit_n]),
                      (x_m[test_m], y_m[test_m], x_n[test_n], y_n[test_n]), attack_model, seed)
    pairs = [{"ours": attack, "art": art, "ours_auc": ours[attack], "art_auc": theirs[art],
              "difference": abs(ours[attack] - theirs[art]),
              "rows": (len(test_m), len(test_n))} for attack, art in PAIRS]
    return pairs, theirs[EXTRA]
