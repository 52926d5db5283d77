"""Distillation throughput on 1 and N processes under torchrun, and the scaling efficiency.

What is timed: the demo's distillation (teacher: width-64 MNIST-1D CNN, student: width 16,
logit KD on labelled plus transfer samples) through edgepack's trainer -- DistributedDataParallel
over gloo on the CPU, NCCL with one GPU per process on CUDA. The global batch is the same for
every process count (``--global-batch``; each process reads ``global / N`` samples a step), so
N processes do the same work per epoch as one. Samples per second are job-wide (all samples
of an epoch over the epoch's wall time); the first epoch is a warm-up and is not counted.
Scaling efficiency = samples/s on N processes / (N x samples/s on 1 process).

Runs alternate (1, N, 1, N, ...) so a change of machine load hits both alike; the ratio of
each adjacent pair is reported, then medians.

On the CPU every process uses one thread (``torch.set_num_threads(1)``, OMP_NUM_THREADS=1):
N processes need N free cores. The one-process baseline is a plain process (no process
group), as ``edgepack run`` alone; with ``--device cuda`` the baseline is one GPU (a process
group of one, NCCL) and N processes use N GPUs.

    python benchmarks/distributed_scaling.py [--processes 2] [--repeats 3] [--epochs 4]
    python benchmarks/distributed_scaling.py --device cuda --processes 8   # a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def worker(args) -> None:
    """One process of a torchrun job: distil for ``epochs`` epochs; rank 0 writes its figures."""
    import torch

    torch.set_num_threads(1)
    from edgepack.compress.distill import DistillConfig, distill
    from edgepack.compress.parallel import Distributed, init_process_group
    from edgepack.zoo.mnist1d_models import mnist1d, mnist1d_cnn

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if args.device == "cuda" or world > 1:
        init_process_group()  # NCCL where CUDA is available, gloo otherwise
    data = mnist1d(samples=args.samples, seed=42, transfer_samples=args.transfer)
    torch.manual_seed(0)
    teacher, student = mnist1d_cnn(width=64), mnist1d_cnn(width=16)
    config = DistillConfig(epochs=args.epochs, batch_size=args.global_batch // world,
                           transfer_samples=args.transfer, lr=1e-2)
    start = time.perf_counter()
    result = distill(teacher, student, config, data, progress=False)
    wall = time.perf_counter() - start
    if int(os.environ.get("RANK", "0")) == 0:
        record = result.record
        backend = torch.distributed.get_backend() if torch.distributed.is_initialized() \
            else "none (a plain process)"
        Path(args.result).write_text(json.dumps({
            "backend": f"{backend} on {Distributed().device}",
            "wall_s": wall, "samples_per_s": record["samples_per_s"],
            "rows": record["labelled_samples"] + record["transfer_samples"]}))


def run_job(processes: int, args, result: Path) -> dict:
    """Start one torchrun job; return rank 0's figures."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(processes), str(Path(__file__).resolve()), "--worker",
               "--result", str(result), "--epochs", str(args.epochs), "--samples",
               str(args.samples), "--transfer", str(args.transfer), "--global-batch",
               str(args.global_batch), "--device", args.device]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(result.read_text())


def samples_per_s(figures: dict) -> float:
    """Median job-wide samples/s over the epochs after the first (the warm-up)."""
    return statistics.median(figures["samples_per_s"][1:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2, help="N, compared with 1")
    parser.add_argument("--repeats", type=int, default=3, help="(1, N) pairs, alternated")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per run (1 warm-up)")
    parser.add_argument("--samples", type=int, default=10_000, help="labelled MNIST-1D samples")
    parser.add_argument("--transfer", type=int, default=20_000, help="transfer-set samples")
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.epochs < 2 or args.global_batch % args.processes:
        parser.error("--epochs must be >= 2 and --global-batch divisible by --processes")
    import torch

    if args.device == "cuda" and torch.cuda.device_count() < args.processes:
        parser.error(f"--device cuda needs {args.processes} GPUs; torch sees "
                     f"{torch.cuda.device_count()}")
    return report(args)


def report(args) -> int:
    from edgepack.bench.envinfo import cpu_info

    load_before = os.getloadavg()[0]  # other work on the machine skews every figure
    rates: dict[int, list[float]] = {1: [], args.processes: []}
    rows, backends = 0, {}
    with tempfile.TemporaryDirectory() as folder:
        for repeat in range(args.repeats):
            for n in (1, args.processes):
                figures = run_job(n, args, Path(folder) / f"{n}-{repeat}.json")
                rates[n].append(samples_per_s(figures))
                rows, backends[n] = figures["rows"], figures["backend"]
                print(f"  run {repeat + 1}: {n} process(es): {rates[n][-1]:,.0f} samples/s",
                      flush=True)
    n = args.processes
    pairs = [b / a for a, b in zip(rates[1], rates[n])]
    one, many = statistics.median(rates[1]), statistics.median(rates[n])
    cpu = cpu_info()
    print(f"\nmachine: {cpu['cpu']}, {cpu['logical_cores']} logical CPUs; device {args.device}; "
          f"1 thread per process; load average (1 min) {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print(f"work: {rows:,} training rows an epoch (labelled + {args.transfer:,} transfer), "
          f"global batch {args.global_batch}, "
          f"{args.epochs} epochs (first not counted), {args.repeats} alternated pairs")
    print(f"process group: 1 process {backends[1]}; {n} processes {backends[n]}")
    print(f"1 process : {one:,.0f} samples/s (runs: {', '.join(f'{r:,.0f}' for r in rates[1])})")
    print(f"{n} processes: {many:,.0f} samples/s (runs: {', '.join(f'{r:,.0f}' for r in rates[n])})")
    print(f"speed-up {statistics.median(pairs):.2f}x (pairs: "
          f"{', '.join(f'{p:.2f}' for p in pairs)}); scaling efficiency "
          f"{statistics.median(pairs) / n:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
