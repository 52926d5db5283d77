"""Distill the MNIST-1D teacher into a 9.6x smaller student on several processes.

Run alone (one process) or under torchrun; the trainer then uses DistributedDataParallel
(gloo on CPU, NCCL on CUDA), shards the data with DistributedSampler, and only rank 0
writes checkpoints and the student's weights:

    torchrun --standalone --nproc-per-node 2 examples/distill_torchrun.py --out runs/ddp

A whole recipe (distill, prune, export, quantize, benchmark) scales out the same way, with
one run folder written by rank 0:

    torchrun --standalone --nproc-per-node 2 -m edgepack run examples/mnist1d.toml --out runs/ddp
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch

from edgepack.compress.distill import DistillConfig, distill
from edgepack.compress.trainer import TrainConfig, accuracy, fit
from edgepack.zoo.mnist1d_models import mnist1d, mnist1d_cnn
from edgepack.export.weights import save_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/ddp")
    parser.add_argument("--teacher-epochs", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--transfer", type=int, default=20_000)
    args = parser.parse_args()
    rank = int(os.environ.get("RANK", "0"))  # set by torchrun

    data = mnist1d(samples=10_000, seed=42, transfer_samples=max(args.transfer, 10))
    torch.manual_seed(0)
    teacher = mnist1d_cnn(width=64)
    fit(teacher, data["train"], TrainConfig(epochs=args.teacher_epochs, progress=rank == 0),
        eval_batches=data["evaluation"], desc="teacher")
    student = mnist1d_cnn(width=16)
    out = Path(args.out)
    result = distill(teacher, student, DistillConfig(epochs=args.epochs,
                                                     transfer_samples=args.transfer),
                     data, checkpoint=out / "checkpoint.pt", progress=rank == 0)
    if rank == 0:
        save_weights(result.artifact, out / "student.safetensors")
        print(f"teacher {accuracy(teacher, data['evaluation']):.4f}, "
              f"student {result.record['student_accuracy']:.4f} -> {out / 'student.safetensors'}")


if __name__ == "__main__":
    main()
