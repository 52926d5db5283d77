"""MNIST-1D generated locally, with no torch import (so a worker process starts fast).

``mnist1d.data.make_dataset`` builds each sample in Python (about 0.5 ms a sample), so the
demo's 28,000 samples take some 15 s of one core. The large unlabelled transfer set is not
needed until distillation, so :func:`start_making` makes it in a worker process while the
teacher trains on the other core, and :func:`finish_making` collects it when it is first used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from edgepack.core.checks import check_budget

log = logging.getLogger("edgepack")

BACKGROUND_FROM = 4_000  # samples in a set before a worker process pays for its start


@contextlib.contextmanager
def _numpy_seed(seed: int):
    """make_dataset seeds numpy's global generator; give the caller's state back after."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def make_mnist1d(samples: int, seed: int) -> dict[str, np.ndarray]:
    """Generate MNIST-1D locally: ``x`` (N, 40) float32 and ``y`` (N,) int64, 80/20 split."""
    from mnist1d.data import get_dataset_args, make_dataset

    if samples < 10:
        raise ValueError(f"mnist1d: samples must be >= 10, got {samples}")
    check_budget("mnist1d", "samples", samples, "samples")
    args = get_dataset_args()
    args.num_samples = int(samples)
    args.seed = int(seed)
    with _numpy_seed(seed):
        raw = make_dataset(args)
    return {"x": raw["x"].astype(np.float32), "y": raw["y"].astype(np.int64),
            "x_test": raw["x_test"].astype(np.float32), "y_test": raw["y_test"].astype(np.int64)}


def start_making(samples: int, seed: int, path: Path) -> subprocess.Popen:
    """Make one set in a plain Python process (no multiprocessing, so the caller's main
    script is never re-run) that saves it at ``path`` (written aside, then renamed)."""
    code = ("import os, sys, numpy; from edgepack.zoo.mnist1d_data import make_mnist1d; "
            "path = sys.argv[3]; part = path + '.part.npz'; "
            "numpy.savez(part, **make_mnist1d(int(sys.argv[1]), int(sys.argv[2]))); "
            "os.replace(part, path)")
    package_root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen([sys.executable, "-c", code, str(samples), str(seed), str(path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_making(worker: subprocess.Popen, samples: int, seed: int,
                  path: Path) -> dict[str, np.ndarray]:
    """Wait for :func:`start_making`'s process and read its set; if it failed, make the same
    set here (slower, never different)."""
    _, err = worker.communicate()
    if worker.returncode == 0:
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {k: archive[k] for k in ("x", "y", "x_test", "y_test")}
        except (OSError, ValueError, KeyError) as exc:
            err = str(exc).encode()
    lines = err.decode(errors="replace").strip().splitlines()
    log.debug("mnist1d worker failed (%s); making the set here", lines[-1] if lines else "")
    return make_mnist1d(samples, seed)
