"""One recipe run as a torchrun job: every process trains, rank 0 alone writes the run.

Under ``torchrun --nproc-per-node N [--nnodes M ...] -m edgepack run RECIPE.toml`` every
process loads the recipe and its data. **Rank 0 leads**: it runs the pipeline exactly as a
single process does -- prepares the teacher, measures, exports, quantizes, benchmarks, keeps
or drops each candidate, writes the run folder. **The other ranks follow**: they wait for rank
0's word and

- ``train``: join the training of a torch -> torch stage (distillation, pruning's
  fine-tuning); the trainer shards the data across all ranks (DistributedDataParallel,
  :mod:`edgepack.compress.parallel`) and rank 0 alone writes its checkpoints;
- ``adopt``: rebuild the artifact rank 0 kept from its weights file, sent over the process
  group, with the stage's own ``rebuild`` -- so the next stage starts from the same model on
  every rank (no shared filesystem is needed, for multi-node jobs);
- ``finish``: return rank 0's report. They write nothing but their log lines.

Rank 0 first sends the teacher's weights (it alone trains or loads it; the others built the
same architecture). Messages travel over a gloo group with a long timeout: the followers may
wait for hours while rank 0 trains the teacher or benchmarks, while training's own
collectives keep the default group's timeout. An error on rank 0 while the others wait is
sent to them, so every rank stops with the same message; an error on rank 0 during a stage's
training ends rank 0, and torchrun stops the others.
"""

from __future__ import annotations

import functools
import tempfile
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Callable

from torch import nn

from edgepack.compress.parallel import Distributed
from edgepack.core.errors import exit_code_for
from edgepack.core.stage import StageConfig, StageInput, spec_for

WAIT_LIMIT = timedelta(hours=24)   # how long a follower waits for rank 0's next word


class LeaderStopped(RuntimeError):
    """Rank 0 stopped with an error: a follower stops with its line and its exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Crew:
    """The processes running one recipe: rank 0 leads, the others follow (alone: a crew of
    one, where every method does nothing)."""

    def __init__(self, rank: int = 0, world: int = 1, group=None):
        self.rank, self.world, self._group = rank, world, group
        self._followers_listening = True   # False once they may be stuck mid-training
        self._holding = "teacher"          # the artifact the followers hold

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # ------------------------------------------------------------------ messages

    def _tell(self, message: tuple) -> None:
        import torch.distributed as dist

        dist.broadcast_object_list([message], src=0, group=self._group)

    def _hear(self) -> tuple:
        import torch.distributed as dist

        box = [None]
        dist.broadcast_object_list(box, src=0, group=self._group)
        if box[0][0] == "failed":
            _, exit_code, text = box[0]
            raise LeaderStopped(f"rank 0 stopped: {text}", exit_code)
        return box[0]

    # ------------------------------------------------------------------ rank 0's side

    @contextmanager
    def leading(self):
        """Rank 0's work; an error in it is sent to the followers waiting for rank 0."""
        try:
            yield
        except Exception as exc:  # Ctrl-C and kills reach every rank through torchrun
            if self.is_main and self.world > 1 and self._followers_listening:
                self._followers_listening = False
                try:
                    self._tell(("failed", exit_code_for(exc),
                                str(exc).strip().splitlines()[0] if str(exc).strip()
                                else type(exc).__name__))
                except Exception:  # noqa: BLE001 - a follower already gone: torchrun stops it
                    pass
            raise

    def share_teacher(self, teacher: nn.Module) -> None:
        """Rank 0's teacher weights (safetensors bytes) to every follower, which built the
        same architecture (loading resizes layers, should the weights be a pruned model's)."""
        if self.world > 1:
            from safetensors.torch import save

            self._tell(("teacher", save({k: v.detach().contiguous().cpu()
                                         for k, v in teacher.state_dict().items()})))

    @contextmanager
    def training(self, index: int, config: StageConfig):
        """Rank 0 runs a stage; a torch -> torch stage is trained by every rank together."""
        spec = spec_for(config)
        together = self.world > 1 and spec.consumes == spec.produces == "torch"
        if together:
            self._tell(("train", index))
        try:
            yield
        except spec.failures:
            raise   # the followers failed the same check at the same step and listen again
        except BaseException:
            if together:
                self._followers_listening = False   # they may wait in a collective
            raise

    def share_kept(self, index: int, artifact) -> None:
        """A kept torch artifact's weights file to every follower, to adopt."""
        if self.world == 1 or artifact.module is None or artifact.name == self._holding:
            return
        self._tell(("adopt", index, Path(artifact.file).read_bytes()))
        self._holding = artifact.name

    def finish(self, report: dict) -> None:
        if self.world > 1:
            self._tell(("finish", report))

    # ------------------------------------------------------------------ the followers' side

    def follow(self, teacher: nn.Module, stages: list[StageConfig],
               given_for: Callable[[StageConfig, nn.Module, str, Path], StageInput],
               log: Callable[[str], None]) -> dict:
        """Train with rank 0 and adopt what it keeps until it finishes; return its report.

        ``given_for(config, module, name, folder)`` is the stage input rank 0 would build for
        ``module`` (named ``name``); ``folder`` is private to this process and deleted after.
        """
        from edgepack.export.weights import load_weights

        _, weights = self._hear()
        with tempfile.TemporaryDirectory(prefix=f"edgepack-rank{self.rank}-") as private:
            (Path(private) / "teacher.safetensors").write_bytes(weights)
            current = load_weights(teacher, Path(private) / "teacher.safetensors").eval()
            name = "teacher"
            while True:
                kind, *rest = self._hear()
                if kind == "finish":
                    return rest[0]
                config = stages[rest[0] - 1]
                spec = spec_for(config)
                folder = Path(private) / f"{rest[0]:02d}-{config.kind}"
                folder.mkdir(exist_ok=True)
                given = given_for(config, current, name, folder)
                if kind == "train":
                    log(f"[rank {self.rank}] [{folder.name}] training with rank 0")
                    try:
                        spec.run(config, given)
                    except spec.failures:
                        pass   # rank 0 reports it; the stage is not kept
                elif kind == "adopt":
                    weights = folder / "model.safetensors"
                    weights.write_bytes(rest[1])
                    current, name = spec.rebuild(config, given, weights), folder.name


_CREW: Crew | None = None


def leads(function):
    """Run ``function`` inside :meth:`Crew.leading`: on rank 0 its errors reach the followers."""
    @functools.wraps(function)
    def led(*args, **kwargs):
        with join().leading():
            return function(*args, **kwargs)
    return led


def join() -> Crew:
    """This process's crew. Under torchrun the first call joins the job (the process group
    from torchrun's environment, plus a gloo group for rank 0's messages) and later calls
    return the same crew; alone it is a crew of one, with nothing to set up."""
    global _CREW
    if _CREW is None:
        job = Distributed()
        if not job.active:
            return Crew()
        import torch.distributed as dist

        _CREW = Crew(job.rank, job.world, dist.new_group(backend="gloo", timeout=WAIT_LIMIT))
    return _CREW


def rank() -> int:
    """This process's rank in the crew (0 when alone)."""
    return join().rank
