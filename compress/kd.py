"""The knowledge-distillation loss and the batch helpers both distillation and pruning's
fine-tuning use.

Hinton et al. (2015)::

    loss = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

Rows of a transfer set carry the label :data:`NO_LABEL` and get only the soft term.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from core.tensors import concat, num_rows, rows as take_rows

NO_LABEL = -1  # the hard label of a teacher-labelled transfer-set row


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al.'s loss; rows whose label is -1 only get the soft term."""
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=-1),
                    F.log_softmax(teacher_logits / temperature, dim=-1),
                    log_target=True, reduction="batchmean") * temperature ** 2
    labelled = labels != NO_LABEL
    if alpha >= 1.0 or not bool(labelled.any()):
        return alpha * soft
    hard = F.cross_entropy(student_logits[labelled], labels[labelled])
    return (1 - alpha) * hard + alpha * soft


def collect(batches, limit: int | None = None, labelled: bool = True):
    """Stack an iterable of batches into tensors (at most ``limit`` rows).

    A batch's inputs may be one tensor or a tuple of tensors (token ids and mask); the
    result keeps that structure.
    """
    xs, ys, rows = [], [], 0
    for batch in batches:
        inputs, labels = (batch if labelled else (batch[0] if isinstance(batch, (tuple, list))
                                                  else batch, None))
        xs.append(inputs)
        if labels is not None:
            ys.append(labels)
        rows += num_rows(inputs)
        if limit is not None and rows >= limit:
            break
    if not xs:
        return None, None
    x = take_rows(concat(xs), 0, limit)
    return x, (torch.cat(ys)[:limit] if ys else None)
