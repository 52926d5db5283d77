"""A run killed (SIGKILL) or interrupted (SIGINT) mid-training resumes to the same result."""

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from edgepack.cli.main import main

RECIPE = textwrap.dedent('''
    name = "resume"
    tolerance = 1.0

    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 8 }
    train_epochs = 2

    [data]
    args = { samples = 1200, seed = 5, transfer_samples = 0 }

    [[stages]]
    kind = "distill"
    student = { build = "edgepack.zoo:mnist1d_cnn", args = { width = 4 } }
    epochs = 12

    [bench]
    min_runs = 10
    min_time_s = 0.01
''')


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    (folder / "recipe.toml").write_text(RECIPE)
    out = folder / "straight"
    assert main(["run", str(folder / "recipe.toml"), "--out", str(out), "--no-progress"]) == 0
    return folder, json.loads((out / "report.json").read_text())


def _start_and_stop(recipe, out, sig) -> int:
    """Start a run in a subprocess; send ``sig`` once the 2nd epoch checkpoint exists."""
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "run", str(recipe), "--out",
                             str(out), "--no-progress"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    checkpoint = out / "01-distill" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    first_seen = None
    while time.monotonic() < deadline and proc.poll() is None:
        if checkpoint.exists():
            first_seen = first_seen or checkpoint.stat().st_mtime_ns
            if checkpoint.stat().st_mtime_ns != first_seen:  # a later epoch was written
                break
        time.sleep(0.005)
    proc.send_signal(sig)
    proc.wait(timeout=60)
    assert not (out / "01-distill" / "record.json").exists(), "the run finished before the signal"
    assert not (out / "manifest.json").exists()
    return proc.returncode


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9), (signal.SIGINT, 130)])
def test_stopped_run_resumes_to_the_same_result(uninterrupted, sig, code):
    folder, straight = uninterrupted
    out = folder / f"stopped-{sig.name}"
    assert _start_and_stop(folder / "recipe.toml", out, sig) == code
    assert main(["run", str(folder / "recipe.toml"), "--out", str(out), "--resume",
                 "--no-progress"]) == 0
    resumed = json.loads((out / "report.json").read_text())
    a, b = straight["stages"][0], resumed["stages"][0]
    assert b["record"]["epochs_run"] == a["record"]["epochs_run"] == 12
    assert b["sha256"] == a["sha256"]          # bit-identical student weights
    assert b["accuracy"] == a["accuracy"]
    assert not (out / "01-distill" / "checkpoint.pt").exists()
