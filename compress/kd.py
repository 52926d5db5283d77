"""The knowledge-distillation loss and the batch helpers both distillation and pruning's
fine-tuning use.

Hinton et al. (2015)::

    loss = (1 - alpha) * CE(y, s) + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))

Rows of a transfer set carry the label :data:`NO_LABEL` and get only the soft term.

:func:`teacher_outputs` labels a whole (transfer) set with the teacher once, before training:
under torchrun each process runs the teacher on its own share of the rows and the shares are
gathered, so a large transfer set costs one teacher pass in total, not one per process.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from edgepack.compress.parallel import Distributed, moved_to
from edgepack.core.tensors import as_tuple, call, concat, is_multi, num_rows, rows as take_rows

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


@torch.no_grad()
def teacher_outputs(teacher: nn.Module, inputs, batch: int = 1024) -> torch.Tensor:
    """The teacher's outputs for every row of ``inputs`` (a tensor, or a tuple such as token
    ids and mask; on the CPU), computed once: in a torchrun job each rank runs its contiguous
    share and all ranks gather the rest."""
    job = Distributed()
    teacher.eval()

    def on_device(start: int, stop: int):
        part = take_rows(inputs, start, stop)
        if is_multi(part):
            return tuple(t.to(job.device) for t in as_tuple(part))
        return part.to(job.device)

    def share(start: int, stop: int) -> torch.Tensor:
        with moved_to(teacher, job.device):
            chunks = [call(teacher, on_device(i, min(i + batch, stop))).cpu()
                      for i in range(start, stop, batch)]
            if not chunks:  # a rank without rows (fewer rows than ranks) still gives the shape
                chunks = [call(teacher, on_device(0, 1)).cpu()[:0]]
        return torch.cat(chunks)

    return job.gather_rows(share, num_rows(inputs))


def training_set(data: dict, config):
    """Labelled inputs plus ``config.transfer_samples`` unlabelled ones (label -1).

    ``config`` is a distillation config: its ``objective`` and ``transfer_samples`` count.
    """
    if not getattr(config, "labelled", True):   # the transfer set alone: no private sample
        inputs, labels = _transfer_rows(data, config.transfer_samples)
        return inputs, torch.full((num_rows(inputs),), NO_LABEL, dtype=torch.long)
    labelled = config.objective == "logits"  # embedding models train on inputs alone
    inputs, labels = collect(data["train"], labelled=labelled)
    if inputs is None or num_rows(inputs) == 0:
        raise ValueError("distill: the training data is empty (0 samples)")
    if labels is None:
        labels = torch.full((num_rows(inputs),), NO_LABEL, dtype=torch.long)
    if config.transfer_samples:
        if data.get("transfer") is None:
            raise ValueError("distill.transfer_samples > 0 but the data provider gives no "
                             "'transfer' set")
        extra, _ = collect(data["transfer"], config.transfer_samples, labelled=False)
        if extra is None:
            raise ValueError("distill: the transfer set is empty (0 samples)")
        inputs = concat([inputs, extra])
        labels = torch.cat([labels, torch.full((num_rows(extra),), NO_LABEL,
                                               dtype=labels.dtype)])
    return inputs, labels


def _transfer_rows(data: dict, samples: int):
    if data.get("transfer") is None:
        raise ValueError("distill.labelled = false but the data provider gives no 'transfer' "
                         "set")
    inputs, _ = collect(data["transfer"], samples, labelled=False)
    if inputs is None or num_rows(inputs) == 0:
        raise ValueError("distill: the transfer set is empty (0 samples)")
    return inputs, None


def freeze(model: nn.Module, prefixes) -> int:
    """Stop training the parameters whose names start with one of ``prefixes`` (a student's
    word embeddings, say: most of a small transformer's weights, and slow to update); return
    how many parameters that fixes. A prefix that names nothing is an error, not a no-op."""
    from edgepack.core.checks import did_you_mean

    names = [name for name, _ in model.named_parameters()]
    fixed = 0
    for prefix in prefixes:
        matched = [name for name in names if name.startswith(prefix)]
        if not matched:
            raise ValueError(f"distill.freeze: no parameter name starts with {prefix!r}"
                             f"{did_you_mean(prefix, names)}")
        for name, parameter in model.named_parameters():
            if name in matched:
                parameter.requires_grad_(False)
                fixed += parameter.numel()
    return fixed
