"""edgepack.compress.parallel: one sample order for any number of processes; teacher outputs once."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.compress.kd import teacher_outputs
from edgepack.compress.parallel import Distributed


def _as_rank(rank: int, world: int) -> Distributed:
    """This process's Distributed, told it is ``rank`` of ``world`` (shard reads only these)."""
    job = Distributed()
    job.active, job.rank, job.world = world > 1, rank, world
    return job


def _epoch(loader, sampler, epoch: int) -> list[list[int]]:
    sampler.set_epoch(epoch)
    return [batch[0].tolist() for batch in loader]


def test_two_processes_read_the_global_batches_one_process_reads():
    rows = TensorDataset(torch.arange(100))  # 100 rows: the last global batch is partial
    loader = DataLoader(rows, batch_size=20, shuffle=True)
    alone, alone_sampler = _as_rank(0, 1).shard(loader, seed=7)
    assert alone_sampler is not None, "a shuffled loader is reordered on one process too"
    halves = [_as_rank(r, 2).shard(DataLoader(rows, batch_size=10, shuffle=True), seed=7)
              for r in (0, 1)]
    for epoch in (0, 3):
        single = _epoch(alone, alone_sampler, epoch)
        first, second = (_epoch(loader, sampler, epoch) for loader, sampler in halves)
        assert len(single) == len(first) == len(second) == 5
        for step, batch in enumerate(single):
            assert sorted(first[step] + second[step]) == sorted(batch), (epoch, step)
    assert _epoch(alone, alone_sampler, 0) != _epoch(alone, alone_sampler, 1)


def test_an_unshuffled_loader_alone_is_left_as_it_is():
    loader = DataLoader(TensorDataset(torch.arange(10)), batch_size=4)
    assert _as_rank(0, 1).shard(loader, seed=0) == (loader, None)


def test_teacher_outputs_alone_are_the_teachers_outputs_for_every_row():
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 4))
    inputs = torch.randn(2500, 3)
    outputs = teacher_outputs(teacher, inputs, batch=1000)
    with torch.no_grad():
        assert torch.allclose(outputs, teacher(inputs), atol=1e-6)
    assert teacher_outputs(teacher, inputs[:0]).shape == (0, 4)


def test_more_processes_than_gpus_is_refused_with_the_count_and_the_ways_out(monkeypatch):
    import pytest

    from edgepack.compress.parallel import init_process_group

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for key, value in {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500", "RANK": "1",
                       "WORLD_SIZE": "2", "LOCAL_RANK": "1"}.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=r"LOCAL_RANK=1 but the machine has 1 CUDA") as error:
        init_process_group()
    assert "--nproc-per-node 1" in str(error.value)
    assert "CUDA_VISIBLE_DEVICES=" in str(error.value)
