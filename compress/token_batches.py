"""Training batches of token sequences grouped by length and cut to their longest row.

A sentence corpus is tokenized once and padded to one width (the longest sentence allowed),
but most sentences are far shorter: the English corpus averages about 22 tokens against a
width of 48 or 64. A transformer's cost grows with the sequence length, so a batch of random
rows padded to the width spends most of its time on padding. Here rows are sorted by their
real length (the attention mask's sum) with random tie-breaking, cut into batches of
neighbours, and the batch order is shuffled each epoch; each batch is then cut to its own
longest row. An attention-masked model gives the same outputs with or without the trailing
padding (the mask hides it), so only the time changes, not what is learnt.

Token inputs are ``(input_ids, attention_mask)`` (or more inputs, all ``[rows, width]``),
the **attention mask last**, as :mod:`edgepack.zoo.minilm` hands them. Shuffling draws from
torch's global generator, which the trainer reseeds every epoch, so a resumed run sees the
same batches as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Sampler, TensorDataset

from edgepack.core.tensors import as_tuple, call, is_multi


def token_lengths(inputs) -> torch.Tensor:
    """Real tokens per row: the sum of the attention mask (the last input)."""
    parts = as_tuple(inputs)
    mask = parts[-1]
    if not is_multi(inputs) or mask.dim() != 2 or mask.is_floating_point() \
            or bool(((mask != 0) & (mask != 1)).any()):
        raise ValueError("length-grouped batches need token inputs: (input_ids, ..., "
                         "attention_mask) with a 0/1 integer mask of shape [rows, tokens] last")
    if any(part.shape[:2] != mask.shape for part in parts):
        raise ValueError("length-grouped batches: every token input must have the mask's "
                         f"shape {list(mask.shape)}")
    return mask.sum(1)


class LengthGroupedBatches(Sampler):
    """Batches of row indices of similar length, in a random order (one epoch per iter)."""

    def __init__(self, lengths: torch.Tensor, batch_size: int):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths, self.batch_size = lengths.float(), batch_size

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)

    def __iter__(self):
        # Random tie-breaking inside a length, so equal-length rows meet different neighbours.
        jitter = torch.rand(len(self.lengths))
        order = torch.argsort(self.lengths + 0.5 * jitter)
        batches = list(torch.split(order, self.batch_size))
        for index in torch.randperm(len(batches)).tolist():
            yield batches[index].tolist()


def trimmed(batch: list, token_inputs: int) -> list:
    """A collated batch with its first ``token_inputs`` tensors cut to the longest row."""
    longest = max(int(batch[token_inputs - 1].sum(1).max()), 1)
    return [t[:, :longest] if i < token_inputs else t for i, t in enumerate(batch)]


def length_grouped_loader(inputs, *extra: torch.Tensor, batch_size: int) -> DataLoader:
    """A DataLoader over ``(*inputs, *extra)`` rows in length-grouped, trimmed batches."""
    token_inputs = len(as_tuple(inputs))
    lengths = token_lengths(inputs)
    dataset = TensorDataset(*as_tuple(inputs), *extra)

    def collate(items):
        columns = [torch.stack(column) for column in zip(*items)]
        return trimmed(columns, token_inputs)

    return DataLoader(dataset, batch_sampler=LengthGroupedBatches(lengths, batch_size),
                      collate_fn=collate)


@torch.no_grad()
def outputs_by_length(model: nn.Module, inputs, batch: int = 256) -> torch.Tensor:
    """``model``'s outputs for every row, run in length-sorted, trimmed batches (the same
    outputs as padded batches, at a fraction of the time), in the rows' own order."""
    model.eval()
    parts = as_tuple(inputs)
    order = torch.argsort(token_lengths(inputs))
    chunks = []
    for index in torch.split(order, batch):
        chunks.append(call(model, tuple(trimmed([p[index] for p in parts], len(parts)))))
    out = torch.cat(chunks)
    result = torch.empty_like(out)
    result[order] = out
    return result
