"""One small trainer for teacher training, distillation and fine-tuning after pruning.

:func:`fit` runs AdamW with a one-cycle or cosine schedule, shows its progress, evaluates
after each epoch, keeps the best weights, stops early when
asked, and writes a checkpoint atomically after each epoch (model, optimizer, scheduler, RNG
states, epoch, best epoch). Given the same checkpoint path again with ``resume=True`` it
continues from the last finished epoch and ends with the same weights as an uninterrupted run:
each epoch re-seeds torch, numpy, Python and the data loader's own generator from
``seed + epoch``, so shuffling and dropout do not depend on history; and the RNG states after
the last finished epoch are restored, so whatever runs after :func:`fit` draws the same
numbers as in an uninterrupted run (even when the kill came after the last epoch).

Tests stop a run at a chosen epoch without racing the machine: with the environment variable
``EDGEPACK_TEST_PAUSE_AT`` set to an epoch's label (``"distill 3/12"``), :func:`fit` writes
``paused`` to the file descriptor ``EDGEPACK_TEST_PAUSE_FD`` after that epoch's checkpoint
and blocks until a signal ends the process (test-only; nothing else reads these variables).

Under ``torchrun --nproc-per-node N`` (a process group is set up from torchrun's
environment; gloo on CPU, NCCL on CUDA with one GPU per process) the model is wrapped in
DistributedDataParallel, each process reads its own shard of the data (DistributedSampler,
in the same order a single process reads it: :mod:`edgepack.compress.parallel`), only rank 0 writes
checkpoints and shows the progress bar, and on resume rank 0 reads the checkpoint and hands
it to every rank (no shared filesystem is needed).

Progress: a bar (loss, accuracy, samples/s) only when stderr is a terminal, since a bar
redraws its line with carriage returns and floods a log file; otherwise one line per epoch,
logged at INFO on the ``edgepack.compress.trainer`` logger (at DEBUG when ``progress=False``), so
callers that set no logging up see nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch import nn

from edgepack.core.errors import CheckFailed
from edgepack.core.checks import check_budget, check_choice, check_finite_fields
from edgepack.core.files import atomic_path
from edgepack.compress.parallel import Distributed, gradients_finite, to_device

SCHEDULES = ("onecycle", "cosine", "constant")
log = logging.getLogger(__name__)


def bar_wanted(progress: bool, stream=None) -> bool:
    """Progress bars only on a terminal: elsewhere their redraws flood the log."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(progress and isatty is not None and isatty())


def epoch_line(desc: str, stats: dict) -> str:
    """One line that sums up a finished epoch."""
    train = stats["train_accuracy"]
    shown = "n/a (no labelled samples)" if train is None else f"{train:.3f}"
    line = f"{desc}: loss {stats['loss']:.4f}, train accuracy {shown}"
    if "eval_accuracy" in stats:
        line += f", validation accuracy {stats['eval_accuracy']:.4f}"
    for name, value in (stats.get("monitored") or {}).items():
        line += f", {name.replace('_', ' ')} {value:.4f}"
    return line + f", {stats['samples_per_s']:,.0f} samples/s"


class TrainingDiverged(CheckFailed):
    """The training loss became NaN or infinite: the stage failed (exit code 1)."""

# loss_fn(model, batch) -> (loss, logits, labels); labels of -1 are not counted for accuracy
LossFn = Callable[[nn.Module, tuple], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]


@dataclass
class TrainConfig:
    """Optimiser, schedule and stopping rules."""

    epochs: int = 10
    lr: float = 1e-2
    weight_decay: float = 1e-4
    schedule: str = "onecycle"
    seed: int = 0
    patience: int = 0          # epochs without improvement before stopping; 0 = never stop
    progress: bool = True
    distributed: bool = True   # under torchrun: train on every process (False: this one alone)

    def __post_init__(self):
        check_finite_fields(self, "train")
        check_choice("train", "schedule", self.schedule, SCHEDULES)
        check_budget("train", "epochs", self.epochs, "epochs")
        if self.patience < 0:
            raise ValueError(f"train.patience must be >= 0, got {self.patience}")
        if self.lr <= 0:
            raise ValueError(f"train.lr must be > 0, got {self.lr}")


def cross_entropy_loss(model: nn.Module, batch):
    """Plain supervised loss on an ``(inputs, labels)`` batch: cross-entropy."""
    inputs, labels = batch
    logits = model(inputs)
    return nn.functional.cross_entropy(logits, labels), logits, labels


@torch.no_grad()
def accuracy(model: nn.Module, batches: Iterable) -> float:
    """Top-1 accuracy of ``model`` over ``(inputs, labels)`` batches, in eval mode."""
    was_training = model.training
    model.eval()
    device = next(iter(model.parameters()), torch.empty(0)).device
    correct = total = 0
    for inputs, labels in batches:
        correct += int((model(inputs.to(device)).argmax(-1).cpu() == labels).sum())
        total += int(labels.numel())
    model.train(was_training)
    if total == 0:
        raise ValueError("evaluation data is empty (0 samples)")
    return correct / total


def _scheduler(optimizer, config: TrainConfig, steps: int):
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr,
                                                   total_steps=max(1, steps))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def rng_states() -> dict:
    """torch, numpy and Python RNG states, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch_rng": torch.get_rng_state(), "python_rng": random.getstate(),
            "numpy_rng": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)),
                          "pos": int(pos), "has_gauss": int(has_gauss),
                          "gauss": float(gauss)}}


def restore_rng_states(state: dict) -> None:
    """Put back what :func:`rng_states` saved (older checkpoints lack the numpy state)."""
    torch.set_rng_state(state["torch_rng"])
    version, internal, gauss = state["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    saved = state.get("numpy_rng")
    if saved is not None:
        np.random.set_state((saved["kind"], saved["keys"].numpy().astype(np.uint32),
                             saved["pos"], saved["has_gauss"], saved["gauss"]))


def seed_epoch(seed: int, batches) -> None:
    """Seed every RNG an epoch may draw from: torch, numpy, Python, and the generator a
    DataLoader (or its sampler) was given, which torch.manual_seed does not reach."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    for owner in (batches, getattr(batches, "sampler", None)):
        generator = getattr(owner, "generator", None)
        if isinstance(generator, torch.Generator):
            generator.manual_seed(seed)


def _save_checkpoint(path: Path, model, optimizer, scheduler, epoch: int, best: dict) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "epoch": epoch, **rng_states(),
             "best_metric": best["metric"], "best_epoch": best["epoch"],
             "best_model": best["state"], "history": best["history"]}
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


PAUSE_AT, PAUSE_FD = "EDGEPACK_TEST_PAUSE_AT", "EDGEPACK_TEST_PAUSE_FD"


def _pause_for_test(label: str) -> None:
    """Test-only: after the epoch named by ``EDGEPACK_TEST_PAUSE_AT`` is saved, tell the test
    (write to ``EDGEPACK_TEST_PAUSE_FD``) and wait for its signal (see the module docstring)."""
    if os.environ.get(PAUSE_AT) != label or not os.environ.get(PAUSE_FD):
        return
    os.write(int(os.environ[PAUSE_FD]), b"paused\n")
    while True:
        signal.pause()  # SIGINT raises KeyboardInterrupt here; SIGKILL ends the process


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(f"checkpoint {path} cannot be resumed from ({type(exc).__name__}); "
                         "delete it to start over") from exc


def fit(model: nn.Module, train_batches: Iterable, config: TrainConfig,
        loss_fn: LossFn = cross_entropy_loss, eval_batches: Iterable | None = None,
        checkpoint: str | os.PathLike | None = None, resume: bool = False,
        desc: str = "train", select: Callable[[nn.Module], float] | None = None,
        monitor: Callable[[nn.Module], dict] | None = None) -> dict:
    """Train ``model`` in place; return the history and the best epoch's metric.

    With ``eval_batches`` the weights of the best evaluation epoch are restored at the end:
    best by accuracy on them, or by ``select(model)`` when given (adversarial training
    picks on robust accuracy too: compress/adversarial.py). ``monitor(model)``, when given,
    is called after every epoch and its figures (``{name: float}``) are kept in that epoch's
    history as ``monitored`` and printed: a learning curve that picks nothing.
    """
    if hasattr(train_batches, "__len__") and len(train_batches) == 0:
        raise ValueError(f"{desc}: training data is empty (0 batches)")
    job = Distributed(enabled=config.distributed)
    train_batches, sampler = job.shard(train_batches, config.seed)
    steps_per_epoch = len(train_batches) if hasattr(train_batches, "__len__") else None
    home = next(iter(model.parameters()), torch.empty(0)).device
    if job.active:
        model.to(job.device)  # cuda:LOCAL_RANK under NCCL; alone the model stays put
    trained = job.wrap(model)
    if not job.is_main:
        config = dataclasses.replace(config, progress=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr,
                                  weight_decay=config.weight_decay)
    scheduler = _scheduler(optimizer, config, config.epochs * (steps_per_epoch or 1))
    best = {"metric": -math.inf, "epoch": -1, "state": None, "history": []}
    start_epoch = 0
    path = Path(checkpoint) if checkpoint else None
    # Rank 0 reads the checkpoint and hands it to the others (their disks may not have it).
    state = job.from_main(lambda: _load_checkpoint(path) if path.exists() else None) \
        if path is not None and resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best.update(metric=float(state["best_metric"]), epoch=int(state["best_epoch"]),
                    state=state["best_model"], history=list(state["history"]))
        restore_rng_states(state)
        if _patience_ran_out(config, start_epoch - 1, best):
            start_epoch = config.epochs  # the uninterrupted run stopped after that epoch
    for epoch in range(start_epoch, config.epochs):
        seed_epoch(config.seed + epoch, train_batches)
        if sampler is not None:
            sampler.set_epoch(epoch)
        label = f"{desc} {epoch + 1}/{config.epochs}"
        stats = _train_epoch(trained, train_batches, optimizer, scheduler, loss_fn, config,
                             label, steps_per_epoch, job)
        if eval_batches is not None:
            stats["eval_accuracy"] = accuracy(model, eval_batches)
            metric = stats["eval_accuracy"] if select is None else select(model)
            if select is not None:
                stats["selection_score"] = metric
        else:
            metric = -stats["loss"]
        if monitor is not None and job.is_main:
            stats["monitored"] = {k: float(v) for k, v in monitor(model).items()}
        if job.is_main:
            shown = config.progress and not bar_wanted(config.progress)
            log.log(logging.INFO if shown else logging.DEBUG, epoch_line(label, stats))
        stats["epoch"] = epoch
        best["history"].append(stats)
        if metric > best["metric"]:
            best.update(metric=metric, epoch=epoch,
                        state={k: v.detach().clone() for k, v in model.state_dict().items()})
        if path is not None and job.is_main:
            _save_checkpoint(path, model, optimizer, scheduler, epoch, best)
        job.barrier()
        _pause_for_test(f"{desc} {epoch + 1}/{config.epochs}")
        if _patience_ran_out(config, epoch, best):
            break
    if best["state"] is not None and eval_batches is not None:
        model.load_state_dict(best["state"])
    model.to(home).eval()
    return {"history": best["history"], "best_epoch": best["epoch"],
            "best_metric": best["metric"] if best["epoch"] >= 0 else None}


def _patience_ran_out(config: TrainConfig, epoch: int, best: dict) -> bool:
    return bool(config.patience) and epoch - best["epoch"] >= config.patience


def _train_epoch(model, batches, optimizer, scheduler, loss_fn, config, desc, total,
                 job: Distributed) -> dict:
    from tqdm.auto import tqdm

    model.train()
    seen = correct = labelled = 0
    loss_sum = 0.0
    start = time.perf_counter()
    bar = tqdm(batches, desc=desc, total=total, leave=False, file=sys.stderr,
               disable=not bar_wanted(config.progress), dynamic_ncols=True)
    for batch in bar:
        loss, logits, labels = loss_fn(model, to_device(batch, job.device))
        if not job.active and not torch.isfinite(loss):
            raise TrainingDiverged(f"{desc}: the loss became {loss.item()}; lower the "
                                   "learning rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # In a job one rank's bad loss reaches every rank through the averaged gradients,
        # so all stop at the same step (none is left waiting in the next all-reduce).
        if job.active and not gradients_finite(model):
            raise TrainingDiverged(f"{desc}: the loss became {loss.item()} on at least one "
                                   "process; lower the learning rate")
        optimizer.step()
        scheduler.step()
        n = int(labels.shape[0])
        seen += n
        loss_sum += float(loss.detach()) * n
        mask = labels >= 0  # transfer-set rows carry label -1: no hard label
        labelled += int(mask.sum())
        correct += int((logits.detach().argmax(-1)[mask] == labels[mask]).sum())
        elapsed = max(time.perf_counter() - start, 1e-9)
        bar.set_postfix(loss=f"{loss_sum / seen:.4f}",
                        acc=f"{correct / max(labelled, 1):.3f}", sps=f"{seen / elapsed:.0f}")
    bar.close()
    # Job-wide figures, so every rank picks the same best epoch and stops at the same one.
    loss_sum, seen, correct, labelled = job.sum_all([loss_sum, seen, correct, labelled])
    if seen == 0:
        raise ValueError(f"{desc}: training data is empty (0 samples)")
    # Soft targets alone (distill with labelled = false) leave nothing to score: None, not 0.
    return {"loss": loss_sum / seen, "train_accuracy": correct / labelled if labelled else None,
            "samples_per_s": seen / max(time.perf_counter() - start, 1e-9)}


def selection_batches(data: dict | None):
    """The labelled set that picks the best epoch: ``validation`` when the data provider has
    one, so the ``evaluation`` set that reports accuracy plays no part in training."""
    if not data:
        return None
    validation = data.get("validation")
    return validation if validation is not None else data.get("evaluation")
