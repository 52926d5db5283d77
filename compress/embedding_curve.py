"""An embedding student's learning curve: its quality on held-out rows after every epoch.

With ``objective = "embedding"`` the best epoch is the one with the lowest training loss
(there are no labels to score); how close the student already is to the teacher, and
whether it is still improving, is what decides whether more epochs are worth their time.
Given a ``validation`` set (rows no stage trains on, and not the ``evaluation`` rows that
judge the stages), :func:`embedding_monitor` measures after each epoch the two figures the
keep rule uses: the mean cosine to the teacher's embeddings and the Spearman correlation
of the pairwise similarities (:mod:`edgepack.bench.embedding_quality`). It records, it never picks.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from edgepack.bench.embedding_quality import embedding_quality
from edgepack.compress.kd import collect
from edgepack.compress.token_batches import outputs_by_length
from edgepack.core.tensors import call, is_multi, num_rows, rows


def embeddings(model: nn.Module, inputs) -> torch.Tensor:
    """``model``'s outputs for every row: length-sorted and trimmed for token inputs."""
    model.eval()
    with torch.no_grad():
        if is_multi(inputs):       # (input_ids, attention_mask): cut each batch's padding
            return outputs_by_length(model, inputs)
        return torch.cat([call(model, rows(inputs, i, i + 256))
                          for i in range(0, num_rows(inputs), 256)])


def embedding_monitor(teacher: nn.Module, validation) -> Callable[[nn.Module], dict] | None:
    """``monitor(student) -> {"validation_cosine", "validation_spearman"}``, or None when
    there is no validation set (or fewer than 3 rows: no pairwise ranking)."""
    if validation is None:
        return None
    inputs, _ = collect(validation, labelled=True)
    if inputs is None or num_rows(inputs) < 3:
        return None
    reference = embeddings(teacher, inputs).numpy()

    def monitor(student: nn.Module) -> dict:
        found = embedding_quality(embeddings(student, inputs).numpy(), reference)
        return {"validation_cosine": found["mean_cosine"],
                "validation_spearman": found["spearman"]}

    return monitor
