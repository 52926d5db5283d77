"""The trainer: learning, best-epoch selection, early stopping, checkpoints and resume."""

from __future__ import annotations

import os
import runpy
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from edgepack.compress.trainer import TrainConfig, accuracy, fit

REPO = Path(__file__).resolve().parents[2]

# A tiny, fully seeded training run. The test runs it in a subprocess (killed with SIGKILL
# after its second checkpoint, then resumed) and in-process (uninterrupted, the reference).
TRAINING_SCRIPT = textwrap.dedent('''
    import sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from edgepack.compress.trainer import TrainConfig, cross_entropy_loss, fit

    EPOCHS = 6

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
        g = torch.Generator().manual_seed(1)
        x = torch.randn(96, 8, generator=g)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        train = DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)
        evaluation = DataLoader(TensorDataset(x[:32], y[:32]), batch_size=32)
        return model, train, evaluation

    def train(checkpoint, resume):
        torch.set_num_threads(1)
        model, batches, evaluation = build()
        fit(model, batches, TrainConfig(epochs=EPOCHS, lr=0.05, seed=3, progress=False),
            loss_fn=cross_entropy_loss, eval_batches=evaluation, checkpoint=checkpoint,
            resume=resume)
        return model

    if __name__ == "__main__":
        model = train(sys.argv[1], sys.argv[2] == "resume")
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[3])
''')


def _toy_data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return x, y


def _loaders(batch=32):
    x, y = _toy_data()
    return (DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True),
            DataLoader(TensorDataset(x, y), batch_size=batch))


def test_fit_learns_a_separable_problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    train, evaluation = _loaders()
    before = accuracy(model, evaluation)
    result = fit(model, train, TrainConfig(epochs=15, lr=0.05, progress=False),
                 eval_batches=evaluation)
    assert accuracy(model, evaluation) > max(before, 0.9)
    assert len(result["history"]) == 15
    assert {"loss", "train_accuracy", "samples_per_s", "eval_accuracy"} <= set(result["history"][0])



def test_an_epoch_without_hard_labels_has_no_train_accuracy():
    """Rows labelled -1 (soft targets only) give no train accuracy: None, never 0."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    x, y = _toy_data()

    def soft_only(model, batch):
        inputs, labels = batch
        logits = model(inputs)
        target = nn.functional.one_hot(labels, 2).float()
        return (nn.functional.cross_entropy(logits, target), logits,
                torch.full_like(labels, -1))

    result = fit(model, DataLoader(TensorDataset(x, y), batch_size=32),
                 TrainConfig(epochs=2, lr=0.05, progress=False), loss_fn=soft_only)
    assert [h["train_accuracy"] for h in result["history"]] == [None, None]

def test_fit_restores_the_best_epoch():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    train, evaluation = _loaders()
    result = fit(model, train, TrainConfig(epochs=6, lr=0.05, progress=False),
                 eval_batches=evaluation)
    best = max(h["eval_accuracy"] for h in result["history"])
    assert result["best_metric"] == pytest.approx(best)
    assert accuracy(model, evaluation) == pytest.approx(best)


def test_early_stopping_stops_after_patience_epochs_without_improvement():
    model = nn.Linear(4, 2)
    train, evaluation = _loaders()
    # A learning rate this small cannot change the accuracy: no epoch improves on the first.
    result = fit(model, train, TrainConfig(epochs=20, lr=1e-12, patience=2, progress=False),
                 eval_batches=evaluation)
    assert result["best_epoch"] == 0
    assert len(result["history"]) == 3


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_every_schedule_trains(schedule):
    torch.manual_seed(0)
    model = nn.Linear(4, 2)
    train, evaluation = _loaders()
    fit(model, train, TrainConfig(epochs=8, lr=0.1, schedule=schedule, progress=False),
        eval_batches=evaluation)
    assert accuracy(model, evaluation) > 0.8


def test_checkpoint_holds_everything_needed_to_resume(tmp_path):
    model = nn.Linear(4, 2)
    train, _ = _loaders()
    path = tmp_path / "ckpt.pt"
    fit(model, train, TrainConfig(epochs=2, progress=False), checkpoint=path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "torch_rng", "python_rng"} <= set(state)
    assert state["epoch"] == 1
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_resume_from_a_damaged_checkpoint_is_one_clear_error(tmp_path):
    path = tmp_path / "ckpt.pt"
    path.write_bytes(b"not a checkpoint")
    train, _ = _loaders()
    with pytest.raises(ValueError, match="cannot be resumed from"):
        fit(nn.Linear(4, 2), train, TrainConfig(epochs=1, progress=False), checkpoint=path,
            resume=True)


def test_empty_training_data_is_rejected():
    with pytest.raises(ValueError, match="empty"):
        fit(nn.Linear(4, 2), [], TrainConfig(epochs=1, progress=False))


@pytest.mark.parametrize("kwargs, field", [({"schedule": "linear"}, "schedule"),
                                           ({"epochs": -1}, "epochs"), ({"lr": 0.0}, "lr")])
def test_bad_train_config_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=f"train.{field}"):
        TrainConfig(**kwargs)


def test_sigkilled_run_resumes_to_the_same_weights(tmp_path):
    """Killed after its 2nd epoch's checkpoint (the trainer's test hook pauses it there and
    says so through a pipe: no polling, no race), resumed, equal to an uninterrupted run."""
    from safetensors.torch import load_file

    script = tmp_path / "train_tiny.py"
    script.write_text(TRAINING_SCRIPT)
    checkpoint, weights = tmp_path / "ckpt.pt", tmp_path / "resumed.safetensors"
    read_end, write_end = os.pipe()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "EDGEPACK_TEST_PAUSE_AT": "train 2/6", "EDGEPACK_TEST_PAUSE_FD": str(write_end)}
    command = [sys.executable, str(script), str(checkpoint)]
    killed = subprocess.Popen(command + ["fresh", str(weights)], env=env,
                              pass_fds=(write_end,))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.readline()  # EOF if the run ended without pausing
    killed.send_signal(signal.SIGKILL)
    killed.wait(timeout=60)
    assert said == b"paused\n" and killed.returncode == -signal.SIGKILL
    assert int(torch.load(checkpoint, weights_only=True)["epoch"]) == 1
    env.pop("EDGEPACK_TEST_PAUSE_AT")
    subprocess.run(command + ["resume", str(weights)], env=env, check=True, timeout=120)
    resumed = load_file(weights)

    threads = torch.get_num_threads()
    try:
        reference = runpy.run_path(str(script))["train"](None, False).state_dict()
    finally:
        torch.set_num_threads(threads)
    assert resumed.keys() == reference.keys()
    for name, tensor in reference.items():
        assert torch.equal(resumed[name], tensor), name


DDP_SCRIPT = textwrap.dedent('''
    import os, sys
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from safetensors.torch import save_file
    from edgepack.compress.trainer import TrainConfig, accuracy, fit

    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    batch = int(sys.argv[2])
    result = fit(model, DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True),
                 TrainConfig(epochs=6, lr=0.05, progress=False),
                 eval_batches=DataLoader(TensorDataset(x, y), batch_size=256),
                 checkpoint=os.path.join(sys.argv[1], "ckpt.pt"))
    rank = int(os.environ.get("RANK", "0"))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              os.path.join(sys.argv[1], f"rank{rank}.safetensors"))
    with open(os.path.join(sys.argv[1], f"rank{rank}.txt"), "w") as out:
        out.write(f"{accuracy(model, [(x, y)])} {len(result['history'])}")
''')


def test_torchrun_with_two_cpu_processes_matches_a_single_process_run(tmp_path):
    from safetensors.torch import load_file

    script = tmp_path / "train_ddp.py"
    script.write_text(DDP_SCRIPT)
    # CUDA_VISIBLE_DEVICES empty: gloo on the CPU, also on a machine with fewer GPUs than 2.
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "CUDA_VISIBLE_DEVICES": ""}
    single, double = tmp_path / "single", tmp_path / "double"
    single.mkdir()
    double.mkdir()
    subprocess.run([sys.executable, str(script), str(single), "32"], env=env, check=True,
                   timeout=120)
    # Two processes with 16 samples each per step make the same global batch of 32.
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc-per-node", "2", str(script), str(double), "16"], env=env,
                   check=True, timeout=180, capture_output=True)
    rank0, rank1 = load_file(double / "rank0.safetensors"), load_file(double / "rank1.safetensors")
    for name in rank0:  # DistributedDataParallel keeps the replicas identical
        assert torch.equal(rank0[name], rank1[name]), name
    assert (double / "ckpt.pt").is_file()
    assert not [p for p in double.iterdir() if p.name.endswith(".tmp")]
    accuracy_single, epochs_single = (single / "rank0.txt").read_text().split()
    accuracy_double, epochs_double = (double / "rank0.txt").read_text().split()
    assert epochs_single == epochs_double == "6"
    assert float(accuracy_single) > 0.9
    assert abs(float(accuracy_double) - float(accuracy_single)) <= 0.03


def _rng_draws() -> tuple:
    import random

    import numpy as np

    return (torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random())


def test_resuming_after_the_last_epoch_restores_every_rng(tmp_path):
    """A kill after the last checkpoint: nothing is left to train, and what runs after fit
    must draw the numbers an uninterrupted run draws (torch, numpy and Python)."""
    path = tmp_path / "ckpt.pt"
    train, evaluation = _loaders()
    fit(nn.Linear(4, 2), train, TrainConfig(epochs=2, progress=False), eval_batches=evaluation,
        checkpoint=path)
    uninterrupted = _rng_draws()
    torch.manual_seed(123)   # the resumed process got here by another road
    __import__("numpy").random.seed(123)
    __import__("random").seed(123)
    result = fit(nn.Linear(4, 2), train, TrainConfig(epochs=2, progress=False),
                 eval_batches=evaluation, checkpoint=path, resume=True)
    assert _rng_draws() == uninterrupted
    assert len(result["history"]) == 2


def test_a_loaders_own_generator_is_reseeded_each_epoch():
    """A DataLoader given its own generator is not reached by torch.manual_seed; the trainer
    seeds it per epoch, so the data order of epoch k does not depend on what ran before."""
    x, y = _toy_data()
    orders = []
    for warmup in (0, 5):
        generator = torch.Generator().manual_seed(7)
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True,
                            generator=generator)
        for _ in range(warmup):
            list(loader)   # history that must not matter
        seen = []

        def loss(model, batch, seen=seen):
            seen.append(batch[0][0].clone())
            return __import__("edgepack.compress.trainer", fromlist=["x"]).cross_entropy_loss(model, batch)
        torch.manual_seed(0)
        fit(nn.Linear(4, 2), loader, TrainConfig(epochs=1, progress=False), loss_fn=loss)
        orders.append(torch.stack(seen))
    assert torch.equal(orders[0], orders[1])


def test_resume_does_not_train_past_an_early_stop(tmp_path):
    """Patience ran out at the epoch whose checkpoint was the last: resume stops too."""
    path = tmp_path / "ckpt.pt"
    train, evaluation = _loaders()
    config = TrainConfig(epochs=30, lr=1e-9, patience=1, progress=False)  # no improvement
    first = fit(nn.Linear(4, 2), train, config, eval_batches=evaluation, checkpoint=path)
    resumed = fit(nn.Linear(4, 2), train, config, eval_batches=evaluation, checkpoint=path,
                  resume=True)
    assert len(resumed["history"]) == len(first["history"]) < 30
