"""A run killed (SIGKILL) or interrupted (SIGINT) mid-training resumes to the same result.

The run is stopped at an exact epoch without racing the machine: the trainer's test hook
(``EDGEPACK_TEST_PAUSE_AT``, see compress/trainer.py) writes to a pipe after that epoch's
checkpoint and blocks; the test reads the pipe (a blocking read, no polling), then signals.
Every artifact of the resumed run (distilled and pruned weights, ONNX, int8 ONNX) must hash
the same as an uninterrupted run's.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

from edgepack.cli.main import main

FULL = textwrap.dedent('''
    name = "resume"
    tolerance = 1.0

    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 8 }
    train_epochs = 2

    [data]
    args = { samples = 1200, seed = 5, transfer_samples = 0, validation_samples = 200 }

    [[stages]]
    kind = "distill"
    student = { build = "edgepack.zoo:mnist1d_cnn", args = { width = 6 } }
    epochs = 6

    [[stages]]
    kind = "prune"
    ratio = 0.5
    finetune_epochs = 3
    require_faster = false

    [[stages]]
    kind = "export"
    exporter = "torchscript"

    [[stages]]
    kind = "quantize"
    mode = "dynamic"

    [bench]
    min_runs = 5
    min_time_s = 0.0
    warmup = 1

    [robustness]
    samples = 0
''')
# The default suite's representative: distillation, then pruning killed mid fine-tuning.
FAST = FULL.split("[[stages]]\nkind = \"export\"")[0].replace("epochs = 6", "epochs = 3") \
    .replace("finetune_epochs = 3", "finetune_epochs = 2") + FULL[FULL.index("[bench]"):]
RECIPES = {"fast": (FAST, 3), "full": (FULL, 5)}   # the recipe and its number of artifacts
ARTIFACTS = (".safetensors", ".onnx")


@pytest.fixture(scope="module")
def straight_runs(tmp_path_factory):
    """Uninterrupted runs of each recipe, made on first use: ``{name: (folder, out)}``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only contend on a shared machine
    runs = {}

    def get(name):
        if name not in runs:
            folder = tmp_path_factory.mktemp(f"resume-{name}")
            (folder / "recipe.toml").write_text(RECIPES[name][0])
            out = folder / "straight"
            assert main(["run", str(folder / "recipe.toml"), "--out", str(out),
                         "--no-progress"]) == 0
            runs[name] = folder, out
        return runs[name]
    yield get
    torch.set_num_threads(threads)


def _start_and_stop(recipe, out, label: str, sig) -> int:
    """Run in a subprocess that pauses after the epoch ``label``; then send ``sig``."""
    read_end, write_end = os.pipe()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEPACK_TEST_PAUSE_AT": label,
           "EDGEPACK_TEST_PAUSE_FD": str(write_end)}
    log = out.parent / f"{out.name}.stderr"   # a file: a full pipe could block the run
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "edgepack", "run", str(recipe), "--out",
                                 str(out), "--no-progress"], stdout=subprocess.DEVNULL,
                                stderr=stderr, env=env, pass_fds=(write_end,))
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.readline()  # blocks until the epoch is saved (EOF if the run ended first)
    proc.send_signal(sig)
    proc.wait(timeout=120)
    assert said == b"paused\n", f"the run never reached {label!r}: {log.read_text()[-2000:]}"
    assert not (out / "manifest.json").exists()
    return proc.returncode


def _artifact_hashes(out) -> dict:
    files = json.loads((out / "manifest.json").read_text())["files"]
    return {name: digest for name, digest in files.items() if name.endswith(ARTIFACTS)}


SLOW = pytest.mark.slow
POINTS = [
    pytest.param("fast", "prune finetune 1/1 1/2", signal.SIGKILL, -9,
                 id="prune-finetune-sigkill"),
    pytest.param("full", "distill 2/6", signal.SIGKILL, -9, id="distill-early-sigkill",
                 marks=SLOW),
    pytest.param("full", "distill 2/6", signal.SIGINT, 130, id="distill-early-sigint",
                 marks=SLOW),
    pytest.param("full", "distill 5/6", signal.SIGKILL, -9, id="distill-late-sigkill",
                 marks=SLOW),
    pytest.param("full", "distill 6/6", signal.SIGKILL, -9, id="distill-last-epoch-sigkill",
                 marks=SLOW),
    pytest.param("full", "prune finetune 1/1 2/3", signal.SIGKILL, -9,
                 id="prune-finetune-sigkill-full", marks=SLOW),
    pytest.param("full", "prune finetune 1/1 3/3", signal.SIGINT, 130,
                 id="prune-last-epoch-sigint", marks=SLOW),
]


@pytest.mark.parametrize("recipe, label, sig, code", POINTS)
def test_stopped_run_resumes_to_the_same_result(straight_runs, recipe, label, sig, code):
    folder, straight = straight_runs(recipe)
    out = folder / f"stopped-{label.replace(' ', '-').replace('/', 'of')}-{sig.name}"
    assert _start_and_stop(folder / "recipe.toml", out, label, sig) == code
    assert main(["run", str(folder / "recipe.toml"), "--out", str(out), "--resume",
                 "--no-progress"]) == 0
    expected, got = _artifact_hashes(straight), _artifact_hashes(out)
    assert len(expected) == RECIPES[recipe][1] and got == expected
    a = json.loads((straight / "report.json").read_text())["stages"]
    b = json.loads((out / "report.json").read_text())["stages"]
    assert [s["accuracy"] for s in b] == [s["accuracy"] for s in a]
    assert not list(out.glob(".scratch.*"))             # a killed run's scratch is cleared
    assert not list(out.glob("*/checkpoint.pt"))
    manifest = json.loads((out / "manifest.json").read_text())["files"]
    assert not [name for name in manifest if "scratch" in name]
