"""Per-example membership scores from a model's logits: higher means "more likely a member".

Every score is computed from what the deployed model outputs (its logits, or whatever its
first output is: a softmax is taken of it, so a model that already outputs probabilities
scores the same up to ties) and, for the label-aware ones, the true label.

- ``loss``: minus the cross-entropy of the true label (Yeom et al. 2018: a model fits its
  training examples better than unseen ones), computed as ``-log(1 + exp(-m))`` from the
  log-odds ``m`` of the true label so that it keeps its resolution where the loss is below
  float64's epsilon: ``log_softmax`` rounds every loss under about 1e-16 (a logit margin
  above about 37) to exactly 0, and such a block of ties among the most confident samples
  makes the TPR at 1% FPR jump to 0;
- ``correct``: 1 when the model classifies the example right, else 0 (Yeom et al.'s gap
  attack: its ROC AUC is ``0.5 + (member accuracy - non-member accuracy) / 2``);
- ``confidence``: the log of the top softmax probability (ranks as the probability does,
  without the probability's rounding to 1.0), labels unused;
- ``entropy``: minus the entropy of the softmax, labels unused;
- ``lira``: offline LiRA (Carlini et al. 2022, "Membership inference attacks from first
  principles", the offline variant with a global variance): the target's logit-scaled
  confidence in the true label, ``log p_y - log(1 - p_y)``, minus its mean over reference
  models that never saw the example, in units of the references' spread. Easy examples score
  high on every model; the references take that out, so what is left is what this model
  learned about this example.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def loss_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log p_y``: ``-softplus(-(log p_y - log(1 - p_y)))``, exact where ``p_y`` rounds to 1."""
    return -np.logaddexp(0.0, -scaled_confidence(logits, labels))


def correct_score(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (np.asarray(logits).argmax(axis=1) == labels).astype(np.float64)


def confidence_score(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    """``log max_k p_k``, with the loss's precision (the top class taken as the label)."""
    return loss_score(logits, np.asarray(logits).argmax(axis=1))


def entropy_score(logits: np.ndarray, labels: np.ndarray | None = None) -> np.ndarray:
    logp = log_softmax(logits)
    return (np.exp(logp) * logp).sum(axis=1)


def scaled_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``log p_y - log(1 - p_y)``, computed without forming ``1 - p_y`` (it rounds to 0)."""
    logp = log_softmax(logits)
    rows = np.arange(len(labels))
    true = logp[rows, labels]
    others = logp.copy()
    others[rows, labels] = -np.inf
    top = others.max(axis=1, keepdims=True)
    log_rest = top[:, 0] + np.log(np.exp(others - top).sum(axis=1))
    return true - log_rest


def lira_score(logits: np.ndarray, labels: np.ndarray,
               reference_logits: list[np.ndarray]) -> np.ndarray:
    """Offline LiRA: how far above the references' mean the target's confidence lies.

    ``reference_logits``: each reference model's logits on the same examples, in order; the
    references must not have trained on any of them. The variance is one global figure (the
    paper's choice when there are few references, which per-example variances overfit).
    """
    if len(reference_logits) < 2:
        raise ValueError("lira needs at least 2 reference models")
    observed = np.stack([scaled_confidence(r, labels) for r in reference_logits])
    mean = observed.mean(axis=0)
    spread = float(observed.std(axis=0, ddof=1).mean()) or 1e-12
    return (scaled_confidence(logits, labels) - mean) / spread


SCORES = {"loss": loss_score, "correct": correct_score, "confidence": confidence_score, "entropy": entropy_score}
