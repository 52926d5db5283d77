"""``edgepack run`` under torchrun: every rank trains, rank 0 alone writes one run folder.

The demo's distillation stage (small sizes, a teacher-labelled transfer set) runs on two
gloo processes with a batch of 16 each (``edgepack run`` under torchrun) and on this process
with 32 (the stage alone, from the same teacher): the same global batches
in the same order (:mod:`edgepack.compress.parallel`), gradients averaged by DistributedDataParallel,
the teacher's outputs computed half by each rank and gathered. With ``alpha = 1`` (the soft
term alone, averaged over every row) the two runs are the same computation up to
floating-point summation order, so the students agree to 1e-4 in every weight.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
EPOCHS = 8
WEIGHT_TOLERANCE = 1e-4    # largest difference in any weight, one process against two

RECIPE = textwrap.dedent('''
    name = "scale"
    seed = 0
    tolerance = 1.0

    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = {{ width = 8 }}
    train_epochs = 2

    [data]
    args = {{ samples = 1200, seed = 5, transfer_samples = 1000, validation_samples = 200 }}

    [[stages]]
    kind = "distill"
    student = {{ build = "edgepack.zoo:mnist1d_cnn", args = {{ width = 4 }} }}
    alpha = 1.0
    epochs = {epochs}
    batch_size = {batch}
    transfer_samples = 1000

    [bench]
    min_runs = 10
    min_time_s = 0.01

    [robustness]
    samples = 0
''')


def _env(tmp: Path) -> dict:
    tmp.mkdir(exist_ok=True)
    # CUDA_VISIBLE_DEVICES empty: gloo on the CPU, also on a machine with fewer GPUs than ranks.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp),
            "CUDA_VISIBLE_DEVICES": ""}


def _edgepack(processes: int, recipe: Path, out: Path, *extra: str) -> list[str]:
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(processes)]
    return launcher + ["-m", "edgepack", "run", str(recipe), "--out", str(out),
                       "--no-progress", *extra]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


RUN_FILES = {"report.json", "report.md", "tradeoff.png", "manifest.json", "recipe.toml",
             "inputs.json",
             "00-teacher/model.safetensors", "01-distill/model.safetensors",
             "01-distill/record.json", "01-distill/config.json"}


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """``edgepack run`` on two gloo processes with a batch of 16 each."""
    folder = tmp_path_factory.mktemp("scale")
    for processes, batch in ((1, 32), (2, 16)):
        (folder / f"recipe{processes}.toml").write_text(RECIPE.format(epochs=EPOCHS,
                                                                      batch=batch))
    (folder / "cwd").mkdir()
    out = folder / "run2"
    done = subprocess.run(_edgepack(2, folder / "recipe2.toml", out), cwd=folder / "cwd",
                          env=_env(folder / "tmp2"), text=True, capture_output=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder, out, done


def _distill_alone(recipe_path: Path, teacher_weights: Path) -> tuple[dict, float]:
    """The recipe's distillation stage on this one process (one thread), from the same
    teacher: the student's weights and its evaluation accuracy."""
    from edgepack.compress.distill import distill
    from edgepack.compress.trainer import accuracy
    from edgepack.pipeline.recipe import load_recipe
    from edgepack.pipeline.recipe_runner import load_data
    from edgepack.zoo.mnist1d_models import mnist1d_cnn
    from edgepack.export.weights import load_weights

    recipe = load_recipe(recipe_path)
    config = recipe.stages[0]
    data = load_data(recipe)
    teacher = load_weights(mnist1d_cnn(**recipe.model.args), teacher_weights).eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(config.seed)  # as the stage builds its student
        student = mnist1d_cnn(**config.student["args"])
        distill(teacher, student, config, data, progress=False)
    finally:
        torch.set_num_threads(threads)
    return student.state_dict(), accuracy(student, data["evaluation"])


def test_two_processes_distill_like_one_with_the_same_global_batch(job):
    from safetensors.torch import load_file

    folder, out, done = job
    assert _files(out) == RUN_FILES                       # one run folder, written by rank 0
    assert done.stdout.count("final artifact:") == 1      # rank 0 alone prints the summary
    assert "[rank 1] [01-distill] training with rank 0" in done.stderr
    assert not list((folder / "cwd").iterdir())           # nothing written elsewhere
    assert not [p for p in (folder / "tmp2").iterdir() if p.name.startswith("edgepack")]
    stage = json.loads((out / "report.json").read_text())["stages"][0]
    assert stage["record"]["transfer_samples"] == 1000
    assert stage["record"]["epochs_run"] == EPOCHS
    alone, alone_accuracy = _distill_alone(folder / "recipe1.toml",
                                           out / "00-teacher" / "model.safetensors")
    together = load_file(out / "01-distill" / "model.safetensors")
    worst = max(float((alone[k] - together[k]).abs().max()) for k in alone)
    assert worst <= WEIGHT_TOLERANCE, f"weights differ by up to {worst}"
    assert abs(stage["accuracy"] - alone_accuracy) <= 0.01


def test_an_error_on_rank_0_stops_every_rank_with_its_line(job):
    folder, _, _ = job
    taken = folder / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("a user's file")
    done = subprocess.run(_edgepack(2, folder / "recipe2.toml", taken), env=_env(folder / "tmp3"),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0
    # rank 0 names the problem; rank 1, waiting for rank 0's word, stops with the same line
    assert "edgepack: error: output folder" in done.stderr
    assert "edgepack: error: rank 0 stopped: output folder" in done.stderr
    assert _files(taken) == {"notes.txt"}


def _checkpoint_epoch(path: Path) -> int:
    try:
        return int(torch.load(path, weights_only=True)["epoch"])
    except Exception:  # noqa: BLE001 - not there yet
        return -1


def _kill_job(job: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers at once, as a cluster ends a job (torchrun starts
    each worker in a session of its own, so killing torchrun alone would leave them)."""
    import psutil

    workers = psutil.Process(job.pid).children(recursive=True)
    for process in [psutil.Process(job.pid), *workers]:
        process.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    psutil.wait_procs(workers, timeout=60)


@pytest.mark.slow  # tests/edgepack/test_resume.py covers resume on one process
def test_torchrun_job_killed_mid_distillation_resumes_to_the_same_student(job):
    folder, straight, _ = job
    out = folder / "killed"
    recipe = folder / "recipe2.toml"
    job = subprocess.Popen(_edgepack(2, recipe, out), env=_env(folder / "tmp-killed"),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = out / "01-distill" / "checkpoint.pt"
    deadline = time.monotonic() + 300
    while job.poll() is None and time.monotonic() < deadline and \
            _checkpoint_epoch(checkpoint) < 1:
        time.sleep(0.01)
    _kill_job(job)
    killed_at = _checkpoint_epoch(checkpoint)
    assert 1 <= killed_at < EPOCHS - 1, f"the kill landed after epoch {killed_at}"
    assert not (out / "01-distill" / "record.json").exists()
    done = subprocess.run(_edgepack(2, recipe, out, "--resume"), env=_env(folder / "tmp-resume"),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    resumed = json.loads((out / "report.json").read_text())["stages"][0]
    reference = json.loads((straight / "report.json").read_text())["stages"][0]
    assert resumed["record"]["epochs_run"] == EPOCHS
    assert resumed["sha256"] == reference["sha256"]      # bit-identical student weights
    assert resumed["accuracy"] == reference["accuracy"]
    assert not checkpoint.exists()
