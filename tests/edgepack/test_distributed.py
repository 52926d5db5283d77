"""``edgepack run`` under torchrun: every rank trains, rank 0 alone writes one run folder.

The demo's distillation stage (small sizes, a teacher-labelled transfer set) runs on one
process with a batch of 32 and on two gloo processes with 16 each: the same global batches
in the same order (:mod:`compress.parallel`), gradients averaged by DistributedDataParallel,
the teacher's outputs computed half by each rank and gathered. With ``alpha = 1`` (the soft
term alone, averaged over every row) the two runs are the same computation up to
floating-point summation order, so the students agree to 1e-4 in every weight.
"""

from __future__ import annotations

import hashlib
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
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp)}


def _edgepack(processes: int, recipe: Path, out: Path, *extra: str) -> list[str]:
    launcher = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        "--nproc-per-node", str(processes)]
    return launcher + ["-m", "edgepack", "run", str(recipe), "--out", str(out),
                       "--no-progress", *extra]


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One run on one process (batch 32) and one on two (16 each), from the same cache."""
    folder = tmp_path_factory.mktemp("scale")
    for processes, batch in ((1, 32), (2, 16)):
        (folder / f"recipe{processes}.toml").write_text(RECIPE.format(epochs=EPOCHS,
                                                                      batch=batch))
    cwd = folder / "cwd"
    cwd.mkdir()
    outputs = {}
    for processes in (1, 2):  # the first trains the teacher into the cache, the second reads it
        out = folder / f"run{processes}"
        done = subprocess.run(_edgepack(processes, folder / f"recipe{processes}.toml", out),
                              cwd=cwd, env=_env(folder / f"tmp{processes}"), text=True,
                              capture_output=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        outputs[processes] = (out, done)
    return folder, outputs


def test_two_processes_distill_like_one_with_the_same_global_batch(runs):
    from safetensors.torch import load_file

    folder, outputs = runs
    (one, _), (two, job) = outputs[1], outputs[2]
    assert _files(two) == _files(one)                       # one run folder, the same files
    assert job.stdout.count("final artifact:") == 1          # rank 0 alone prints the summary
    assert "[rank 1] [01-distill] training with rank 0" in job.stderr
    assert not list((folder / "cwd").iterdir())              # nothing written elsewhere
    assert not [p for p in (folder / "tmp2").iterdir() if p.name.startswith("edgepack")]
    assert _sha(two / "00-teacher" / "model.safetensors") == \
        _sha(one / "00-teacher" / "model.safetensors")
    report_one = json.loads((one / "report.json").read_text())["stages"][0]
    report_two = json.loads((two / "report.json").read_text())["stages"][0]
    assert report_two["record"]["transfer_samples"] == 1000
    assert report_two["record"]["epochs_run"] == report_one["record"]["epochs_run"] == EPOCHS
    student_one = load_file(one / "01-distill" / "model.safetensors")
    student_two = load_file(two / "01-distill" / "model.safetensors")
    worst = max(float((student_one[k] - student_two[k]).abs().max()) for k in student_one)
    assert worst <= WEIGHT_TOLERANCE, f"weights differ by up to {worst}"
    assert abs(report_two["accuracy"] - report_one["accuracy"]) <= 0.01


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
def test_torchrun_job_killed_mid_distillation_resumes_to_the_same_student(runs):
    folder, outputs = runs
    straight, _ = outputs[2]
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
