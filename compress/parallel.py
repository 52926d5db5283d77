"""This process's place in a torchrun job, and the few collective steps training needs.

Under ``torchrun --nproc-per-node N [--nnodes M ...]`` every process runs the same code;
:class:`Distributed` sets up the process group from torchrun's environment (NCCL where CUDA
is available, each process on ``cuda:LOCAL_RANK``; gloo on the CPU otherwise) and answers
rank, world size and device. Run alone it is rank 0 of 1 on the CPU and every method is a
no-op, so the trainer has one code path.

**One sample order for any number of processes.** A shuffled training loader is read through
a :class:`~torch.utils.data.distributed.DistributedSampler` seeded by ``seed + epoch`` even on
one process. Rank ``r`` of ``W`` reads rows ``perm[r::W]`` of the same permutation, so with a
per-process batch of ``B / W`` the ``W`` processes together see exactly the global batches a
single process with batch ``B`` sees; DistributedDataParallel averages their gradients, so
the runs agree up to floating-point summation order (except batch-norm statistics, which
each process computes on its own share).
"""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch
from torch import nn


def _resamples(sampler) -> bool:
    """Does this RandomSampler draw other than one permutation of its dataset per epoch?"""
    return bool(sampler.replacement) or sampler.num_samples != len(sampler.data_source)


class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 when run alone, or ``enabled=False``).

    ``enabled=False`` makes the process train alone even inside a job (rank 0 training the
    teacher while the others wait).
    """

    def __init__(self, enabled: bool = True):
        import torch.distributed as dist

        self.active = enabled and dist.is_available() and (
            dist.is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) > 1)
        if self.active and not dist.is_initialized():
            init_process_group()
        self.rank = dist.get_rank() if self.active else 0
        self.world = dist.get_world_size() if self.active else 1
        on_gpu = self.active and dist.get_backend() == "nccl"
        self.device = torch.device("cuda", torch.cuda.current_device()) if on_gpu \
            else torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """DistributedDataParallel around ``model`` (already on :attr:`device`) in a job."""
        if not self.active:
            return model
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, batches, seed: int):
        """A DataLoader over this rank's share of the samples, and its sampler (or None).

        Shuffled loaders get a DistributedSampler on one process too (see the module
        docstring); an unshuffled loader alone is returned as it is.
        """
        from torch.utils.data import DataLoader, RandomSampler
        from torch.utils.data.distributed import DistributedSampler

        if not isinstance(batches, DataLoader):
            if self.active:
                raise ValueError("distributed training needs the training data as a "
                                 "torch.utils.data.DataLoader, to shard it across processes")
            return batches, None
        if batches.batch_size is None and self.active:
            raise ValueError("distributed training needs a DataLoader with a batch_size (not "
                             "a batch_sampler), to shard its samples across processes")
        shuffled = isinstance(batches.sampler, RandomSampler)
        if shuffled and _resamples(batches.sampler):
            # Drawing more (or fewer) rows than the dataset holds, or with replacement, is
            # the caller's choice of steps: a DistributedSampler would silently undo it.
            if self.active:
                raise ValueError("distributed training cannot shard a RandomSampler that "
                                 "draws num_samples != len(dataset) or with replacement; "
                                 "repeat the rows in the dataset instead")
            return batches, None
        if not (self.active or shuffled) or batches.batch_size is None:
            return batches, None
        sampler = DistributedSampler(batches.dataset, num_replicas=self.world, rank=self.rank,
                                     shuffle=shuffled, seed=seed)
        return DataLoader(batches.dataset, batch_size=batches.batch_size, sampler=sampler,
                          collate_fn=batches.collate_fn, num_workers=batches.num_workers,
                          drop_last=batches.drop_last), sampler

    def from_main(self, make):
        """``make()`` run on rank 0, its result (or its error) handed to every rank."""
        if not self.active:
            return make()
        import torch.distributed as dist

        message = [None]
        if self.is_main:
            try:
                message[0] = ("ok", make())
            except Exception as exc:  # every rank stops, none waits for rank 0 forever
                message[0] = ("bad input" if isinstance(exc, ValueError) else "failed",
                              f"rank 0: {exc}")
                dist.broadcast_object_list(message, src=0)
                raise
        dist.broadcast_object_list(message, src=0)
        status, value = message[0]
        if status != "ok":
            raise (ValueError if status == "bad input" else RuntimeError)(value)
        return value

    def gather_rows(self, compute, rows: int) -> torch.Tensor:
        """``compute(start, stop)`` for this rank's contiguous share of ``rows`` rows; the
        shares of every rank, concatenated in order, returned to all (on the CPU)."""
        if not self.active:
            return compute(0, rows)
        import torch.distributed as dist

        bounds = [rows * r // self.world for r in range(self.world + 1)]
        part = compute(bounds[self.rank], bounds[self.rank + 1]).to(self.device)
        longest = max(b - a for a, b in zip(bounds, bounds[1:]))
        padded = part.new_zeros((longest, *part.shape[1:]))
        padded[:len(part)] = part
        pieces = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(pieces, padded)
        return torch.cat([p[:b - a] for p, a, b in zip(pieces, bounds, bounds[1:])]).cpu()

    def sum_all(self, numbers: list[float]) -> list[float]:
        """Each number summed over every rank (one all-reduce)."""
        if not self.active:
            return numbers
        import torch.distributed as dist

        total = torch.tensor(numbers, dtype=torch.float64, device=self.device)
        dist.all_reduce(total)
        return total.tolist()

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


def init_process_group() -> None:
    """The job's process group from torchrun's environment: NCCL with one GPU per process
    (``LOCAL_RANK``) where CUDA is available, gloo on the CPU otherwise."""
    import torch.distributed as dist

    missing = [k for k in ("MASTER_ADDR", "MASTER_PORT", "RANK") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {missing[0]} is not "
                         "set: start several processes with torchrun (torchrun "
                         "--nproc-per-node N -m edgepack run RECIPE.toml)")
    if torch.cuda.is_available():
        local_rank, gpus = int(os.environ.get("LOCAL_RANK", "0")), torch.cuda.device_count()
        if local_rank >= gpus:
            raise ValueError(f"this process is LOCAL_RANK={local_rank} but the machine has "
                             f"{gpus} CUDA device(s), and NCCL needs one GPU per process: start "
                             f"at most {gpus} per node (torchrun --nproc-per-node {gpus}), or "
                             "hide the GPUs (CUDA_VISIBLE_DEVICES=) to train on the CPU with "
                             "gloo")
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


@contextmanager
def moved_to(module: nn.Module | None, device: torch.device):
    """``module`` on ``device`` for the block, then back where it was (a teacher the loss
    calls each step must sit on the training device)."""
    if module is None or device.type == "cpu":
        yield module
        return
    home = next(iter(module.parameters()), torch.empty(0)).device
    module.to(device)
    try:
        yield module
    finally:
        module.to(home)


def to_device(batch, device: torch.device):
    """A batch (a tensor or a tuple/list of them) on ``device``."""
    if device.type == "cpu":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    return type(batch)(to_device(item, device) for item in batch)


def gradients_finite(model: nn.Module) -> bool:
    """Whether every gradient is finite; after DistributedDataParallel's all-reduce every
    rank sees the same gradients, so every rank gets the same answer (and stops together)."""
    return all(bool(torch.isfinite(p.grad).all()) for p in model.parameters()
               if p.grad is not None)
