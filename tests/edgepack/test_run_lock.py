"""One run folder, one writer: a second run into a folder another process is writing is
refused with exit 2 naming the folder and the holder's pid, and writes nothing.

No test races the clock: the lock is held by this process (an ``flock`` on its own open
file, which conflicts with any other open of the file, this process's included), or by a real
run paused by the trainer's test hook, which says so on a pipe (see tests/edgepack/test_resume.py).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from edgepack.pipeline.run_lock import (LOCK_FILE, lock_run_folder, release_run_folder,
                                        releases_run_folders)
from tests.edgepack.helpers import error_line, run_cli
from tests.edgepack.test_resume_inputs import snapshot

RECIPE = textwrap.dedent('''
    name = "lock"
    tolerance = 1.0
    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 4 }
    [data]
    args = { samples = 300, transfer_samples = 0, calibration_samples = 16, validation_samples = 50 }
    [[stages]]
    kind = "distill"
    student = { build = "edgepack.zoo:mnist1d_cnn", args = { width = 2 } }
    epochs = 2
    [bench]
    min_runs = 3
    min_time_s = 0.0
    warmup = 1
    [robustness]
    samples = 0
''')


class HeldLock:
    """The folder's lock, held by this test through its own open file."""

    def __init__(self, folder, pid: int = 4242):
        folder.mkdir(parents=True, exist_ok=True)
        self.handle = open(folder / LOCK_FILE, "a+")
        fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.handle.truncate(0)
        self.handle.write(f"{pid}\n")
        self.handle.flush()

    def release(self) -> None:
        self.handle.close()


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE)
    return path


@pytest.mark.parametrize("resume", [True, False])
def test_a_run_into_a_held_folder_is_refused_naming_the_holder(recipe, tmp_path, capsys,
                                                              resume, no_teacher):
    out = tmp_path / "out"
    held = HeldLock(out)
    (out / "inputs.json").write_text('{"edgepack_run": true, "recipe": {}}')  # a run begun
    before = snapshot(out)
    try:
        code, err = run_cli(capsys, "run", recipe, "--out", out,
                            *(["--resume"] if resume else []))
    finally:
        held.release()
    line = error_line(err)
    assert code == 2 and f"run folder {out} is in use" in line and "pid 4242" in line
    assert snapshot(out) == before


def test_a_new_folder_held_by_another_run_is_refused(recipe, tmp_path, capsys, no_teacher):
    """A run that has just taken the lock and written nothing else yet."""
    out = tmp_path / "out"
    held = HeldLock(out)
    try:
        code, err = run_cli(capsys, "run", recipe, "--out", out)
    finally:
        held.release()
    assert code == 2 and "pid 4242" in error_line(err)
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_the_lock_taken_when_the_folder_opens_refuses_a_second_writer(tmp_path):
    """Past the early check (the other run took the lock just after it): refused the same."""
    from edgepack.pipeline.run_folder import open_run_folder

    out = tmp_path / "out"
    held = HeldLock(out, pid=777)
    try:
        with pytest.raises(ValueError, match=r"in use by another edgepack run \(pid 777"):
            lock_run_folder(out)
        with pytest.raises(ValueError, match="pid 777"):
            open_run_folder(out, False, {"edgepack_run": True, "recipe": {}, "files": {}})
    finally:
        held.release()
    assert [p.name for p in out.iterdir()] == [LOCK_FILE]


def test_a_lock_is_let_go_when_the_run_ends_however_it_ends(tmp_path):
    @releases_run_folders
    def failing_run():
        lock_run_folder(tmp_path)
        lock_run_folder(tmp_path)   # again within the run: nothing to do
        raise ValueError("a stage failed")

    with pytest.raises(ValueError, match="a stage failed"):
        failing_run()
    assert not (tmp_path / LOCK_FILE).exists()     # removed while still held, then let go
    HeldLock(tmp_path).release()     # free again
    release_run_folder(tmp_path)     # not held: nothing to do
    assert (tmp_path / LOCK_FILE).read_text() == "4242\n"


def test_a_lock_won_on_a_removed_file_is_taken_again_on_the_new_one(tmp_path, monkeypatch):
    """A run that finishes removes its lock file; a process that opened the old file just
    before must not hold a lock on a file no one else can see."""
    from edgepack.pipeline import run_lock

    real, calls = run_lock._try_lock, []

    def replaced_first(descriptor):
        calls.append(descriptor)
        if len(calls) == 1:          # the file this process opened is replaced meanwhile
            (tmp_path / LOCK_FILE).unlink()
            (tmp_path / LOCK_FILE).write_text("")
        return real(descriptor)

    monkeypatch.setattr(run_lock, "_try_lock", replaced_first)
    lock_run_folder(tmp_path)
    try:
        assert len(calls) == 2
        with pytest.raises(BlockingIOError):
            HeldLock(tmp_path)       # the lock is on the file at the path now
    finally:
        release_run_folder(tmp_path)


def _start_paused_run(recipe, out):
    """``edgepack run`` in a child that stops after its first distillation epoch (it says so
    on a pipe and waits for a signal)."""
    read_end, write_end = os.pipe()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "EDGEPACK_TEST_PAUSE_AT": "distill 1/2",
           "EDGEPACK_TEST_PAUSE_FD": str(write_end)}
    log = open(out.parent / "child.stderr", "w")
    proc = subprocess.Popen([sys.executable, "-m", "edgepack", "run", str(recipe), "--out",
                             str(out), "--no-progress"], stdout=subprocess.DEVNULL,
                            stderr=log, env=env, pass_fds=(write_end,))
    log.close()
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.readline()   # a blocking read: no timing involved
    return proc, said


def test_a_running_run_holds_its_folder_until_it_is_killed(recipe, tmp_path, capsys):
    out = tmp_path / "out"
    proc, said = _start_paused_run(recipe, out)
    try:
        assert said == b"paused\n", (tmp_path / "child.stderr").read_text()[-2000:]
        before = snapshot(out)
        for extra in ([], ["--resume"]):
            code, err = run_cli(capsys, "run", recipe, "--out", out, "--no-progress", *extra)
            line = error_line(err)
            assert code == 2 and f"pid {proc.pid}" in line and str(out) in line
        assert snapshot(out) == before
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert (out / LOCK_FILE).is_file()          # a killed run leaves its file, unlocked
    lock_run_folder(out)             # the kernel let go of the killed run's lock
    release_run_folder(out)
