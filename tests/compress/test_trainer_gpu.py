"""Training in an NCCL job: the model, the batches and the teacher really sit on the GPU.

A one-process NCCL group (``dist.init_process_group`` before training, as a user's own
launcher does) takes the same code path as a torchrun job on one GPU per process, so one
GPU is enough to check it. Skipped where torch has no CUDA device or no NCCL.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (torch.cuda.is_available() and torch.distributed.is_available()
         and torch.distributed.is_nccl_available()),
    reason="no CUDA GPU with NCCL for torch here")

NCCL_SCRIPT = textwrap.dedent('''
    import json, sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from edgepack.compress.distill import DistillConfig, distill
    from edgepack.compress.parallel import Distributed
    from edgepack.compress.trainer import accuracy

    on_gpu = sys.argv[2] == "nccl"
    if on_gpu:
        torch.cuda.set_device(0)
        dist.init_process_group("nccl", init_method="tcp://127.0.0.1:29533", world_size=1,
                                rank=0)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 8, generator=g)
    y = (x[:, 0] + x[:, 1] - x[:, 2] > 0).long()
    teacher = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 2))
    opt = torch.optim.Adam(teacher.parameters(), 0.01)
    for _ in range(300):
        opt.zero_grad()
        nn.functional.cross_entropy(teacher(x), y).backward()
        opt.step()
    student = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    training_on, teacher_on = set(), set()  # where the training steps' forward passes ran
    student.register_forward_hook(
        lambda m, i, o: training_on.add(str(o.device)) if m.training else None)
    teacher.register_forward_hook(lambda m, i, o: teacher_on.add(str(o.device)))
    batches = [(x[i:i + 256], y[i:i + 256]) for i in range(0, 2048, 256)]
    data = {"train": batches, "evaluation": batches}
    config = DistillConfig(epochs=6, lr=0.02, batch_size=64, augment="noise",
                           adversarial={"eps": 0.1, "steps": 2, "ratio": 0.5})
    result = distill(teacher, student, config, data, progress=False)
    print(json.dumps({"job_device": str(Distributed().device), "training_on": sorted(training_on),
                      "teacher_ran_on": sorted(teacher_on),
                      "student_on": str(next(student.parameters()).device),
                      "teacher_on": str(next(teacher.parameters()).device),
                      "accuracy": accuracy(student.cpu(), batches),
                      "epochs": result.record["epochs_run"]}))
''')


def _run(tmp_path: Path, backend: str) -> dict:
    import json

    script = tmp_path / "nccl_job.py"
    script.write_text(NCCL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(script), str(tmp_path), backend], env=env,
                         timeout=300, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_an_nccl_job_distils_on_the_gpu_and_learns_what_the_cpu_run_learns(tmp_path):
    gpu, cpu = _run(tmp_path, "nccl"), _run(tmp_path, "alone")
    assert gpu["job_device"].startswith("cuda") and cpu["job_device"] == "cpu"
    # Every training step ran on the GPU, the teacher's fresh outputs (augment) too ...
    assert gpu["training_on"] == ["cuda:0"], gpu["training_on"]
    assert "cuda:0" in gpu["teacher_ran_on"], gpu["teacher_ran_on"]
    assert cpu["training_on"] == ["cpu"]
    # ... and the modules are handed back where they came from.
    assert gpu["student_on"] == gpu["teacher_on"] == "cpu"
    assert gpu["epochs"] == cpu["epochs"] == 6
    assert cpu["accuracy"] > 0.9
    assert abs(gpu["accuracy"] - cpu["accuracy"]) <= 0.03
