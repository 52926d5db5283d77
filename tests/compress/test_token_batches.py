"""Length-grouped token batches: every row once per epoch, neighbours in length, padding cut,
the same outputs as padded batches, and distillation with them on a tiny BERT."""

from __future__ import annotations

import pytest
import torch

from edgepack.compress.token_batches import (LengthGroupedBatches, length_grouped_loader,
                                             outputs_by_length, token_lengths)


def token_rows(lengths: list[int], width: int = 12, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (len(lengths), width), generator=generator)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
    return ids * mask, mask


def test_batches_cover_every_row_once_and_group_similar_lengths():
    lengths = [3, 11, 4, 12, 5, 10, 3, 12, 4, 11, 5, 10]   # each length twice
    torch.manual_seed(0)
    batches = list(LengthGroupedBatches(torch.tensor(lengths), batch_size=2))
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert len(batches) == len(LengthGroupedBatches(torch.tensor(lengths), batch_size=2)) == 6
    for batch in batches:  # neighbours: equal lengths pair up
        assert max(lengths[i] for i in batch) - min(lengths[i] for i in batch) == 0, batch


def test_the_order_follows_the_global_seed_and_changes_with_it():
    lengths = torch.tensor([3, 11, 4, 12, 5, 10, 3, 12, 4, 11, 7, 8])

    def epoch(seed):
        torch.manual_seed(seed)
        return list(LengthGroupedBatches(lengths, batch_size=3))

    assert epoch(1) == epoch(1)
    assert epoch(1) != epoch(2)


def test_loader_cuts_each_batch_to_its_longest_row_and_keeps_other_columns():
    ids, mask = token_rows([3, 11, 4, 12, 5, 10])
    targets = torch.arange(6.0)
    torch.manual_seed(0)
    seen = 0
    for batch_ids, batch_mask, batch_targets in length_grouped_loader(
            (ids, mask), targets, batch_size=2):
        assert batch_ids.shape == batch_mask.shape
        assert batch_ids.shape[1] == int(batch_mask.sum(1).max())
        assert batch_targets.shape == (len(batch_ids),)
        seen += len(batch_ids)
    assert seen == 6


def test_outputs_by_length_equal_padded_outputs_in_row_order():
    from tests.tiny_models import tiny_bert_embedder

    model = tiny_bert_embedder(hidden=16, layers=1, heads=2, intermediate=32, vocab_size=64,
                               max_positions=16)
    ids, mask = token_rows([3, 11, 4, 12, 5, 10, 2])
    with torch.no_grad():
        padded = model(ids, mask)
    assert torch.allclose(outputs_by_length(model, (ids, mask), batch=3), padded, atol=1e-5)


@pytest.mark.parametrize("inputs, match", [
    (torch.ones(4, 6, dtype=torch.long), "token inputs"),
    ((torch.ones(4, 6, dtype=torch.long), torch.full((4, 6), 2)), "0/1 integer mask"),
    ((torch.ones(4, 5, dtype=torch.long), torch.ones(4, 6, dtype=torch.long)), "mask's shape"),
])
def test_inputs_that_are_not_token_rows_are_refused_with_what_was_expected(inputs, match):
    with pytest.raises(ValueError, match=match):
        token_lengths(inputs)


def test_distillation_with_length_grouped_batches_learns_the_teacher():
    from edgepack.compress.distill import distill, distill_config, make_student
    from tests.tiny_models import tiny_bert_embedder

    teacher = tiny_bert_embedder(hidden=16, layers=2, heads=2, intermediate=32, vocab_size=64,
                                 max_positions=16)
    ids, mask = token_rows([2 + i % 10 for i in range(64)])
    data = {"train": [((ids, mask), torch.full((64,), -1))],
            "evaluation": [((ids[:16], mask[:16]), torch.full((16,), -1))]}
    config = distill_config(objective="embedding", student_init="every-kth-layer", keep_every=2,
                           epochs=4, lr=3e-3, batch_size=8, length_grouped=True)
    student = make_student(teacher, config, None)
    torch.manual_seed(1)
    with torch.no_grad():  # a tiny random BERT's layers barely move its pooled output: disturb them
        for p in student.encoder.encoder.parameters():
            p.add_(torch.randn_like(p))
    with torch.no_grad():
        before = float(torch.nn.functional.cosine_similarity(
            student(ids[:16], mask[:16]), teacher(ids[:16], mask[:16])).mean())
    result = distill(teacher, student, config, data, progress=False)
    assert result.record["mean_cosine_to_teacher"] > before + 0.2
