"""How much of the teacher-student gap logit KD closes on MNIST-1D (mean of 3 seeds).

Target: a student with >= 8x fewer parameters, trained with KD, closes >= 50% of the
accuracy gap between the same student trained alone and the teacher. (Hinton et al. 2015
on MNIST: 146 errors alone, 74 distilled, teacher 67 -- 92% of the gap closed.)

Teacher: the demo's width-64 CNN (31,498 parameters, trained once and cached). Student:
width 16 (3,274 parameters, 9.6x fewer), trained per seed twice with the same trainer --
alone on the 8,000 labelled samples (alpha = 0), and with KD (alpha = 0.9, T = 4) on them
plus a teacher-labelled transfer set of unlabelled MNIST-1D samples.

    python benchmarks/distill_mnist1d.py [--epochs 12] [--alone-epochs 30] [--transfer 40000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.envinfo import cpu_info  # noqa: E402
from compress.distill import DistillConfig, distill  # noqa: E402
from compress.trainer import accuracy  # noqa: E402
from edgepack.runner import demo_teacher  # noqa: E402
from edgepack.zoo import mnist1d_cnn  # noqa: E402

STUDENT_WIDTH = 16


def train_student(teacher, data, seed: int, alpha: float, epochs: int, transfer: int) -> float:
    torch.manual_seed(seed)
    student = mnist1d_cnn(width=STUDENT_WIDTH)
    config = DistillConfig(alpha=alpha, temperature=4.0, epochs=epochs, lr=1e-2, seed=seed,
                           transfer_samples=transfer)
    distill(teacher, student, config, data, progress=False)
    return accuracy(student, data["evaluation"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="KD epochs")
    parser.add_argument("--alone-epochs", type=int, default=30,
                        help="epochs for the student alone (its epochs are 6x shorter)")
    parser.add_argument("--transfer", type=int, default=40_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    recipe, data, teacher = demo_teacher()
    teacher_acc = accuracy(teacher, data["evaluation"])
    teacher_params = sum(p.numel() for p in teacher.parameters())
    student_params = sum(p.numel() for p in mnist1d_cnn(width=STUDENT_WIDTH).parameters())
    evaluated = len(data["evaluation"].dataset)

    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores), "
          f"torch {torch.__version__}, 1 thread")
    print(f"teacher width 64: {teacher_params:,} params, accuracy {teacher_acc:.4f}; student "
          f"width {STUDENT_WIDTH}: {student_params:,} params "
          f"({teacher_params / student_params:.1f}x fewer)")
    print(f"student alone: {args.alone_epochs} epochs on the labelled set; KD: {args.epochs} "
          f"epochs, alpha 0.9, T 4, plus a transfer set of {args.transfer:,}; accuracy on "
          f"{evaluated} held-out samples")
    alone, distilled = [], []
    for seed in args.seeds:
        start = time.perf_counter()
        alone.append(train_student(teacher, data, seed, 0.0, args.alone_epochs, 0))
        distilled.append(train_student(teacher, data, seed, 0.9, args.epochs, args.transfer))
        print(f"seed {seed}: alone {alone[-1]:.4f}  KD {distilled[-1]:.4f}  "
              f"({time.perf_counter() - start:.0f} s)", flush=True)
    mean_alone, mean_kd = statistics.mean(alone), statistics.mean(distilled)
    gap = teacher_acc - mean_alone
    closed = (mean_kd - mean_alone) / gap if gap > 0 else float("nan")
    errors = lambda acc: round((1 - acc) * evaluated)  # noqa: E731
    print(f"mean of {len(args.seeds)} seeds: alone {mean_alone:.4f} ({errors(mean_alone)} "
          f"errors), KD {mean_kd:.4f} ({errors(mean_kd)} errors), teacher {teacher_acc:.4f} "
          f"({errors(teacher_acc)} errors)")
    verdict = "met" if closed >= 0.5 else "NOT met"
    print(f"gap closed by KD: {closed:.0%} (target >= 50%: {verdict})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
