"""Robustness and attribution drift of every stage of a run, on one fixed sample.

The pipeline makes one :class:`RobustnessProbe` per run and calls :meth:`measure` for the
teacher and for each stage's candidate. Attacks run on the candidate's ONNX file (for torch
stages the scratch export that is also timed), through ONNX Runtime; FGSM/PGD are crafted
on the torch model the candidate is, or was exported from (a transfer attack for int8
files); the black-box Square Attack needs no torch model. See :mod:`edgepack.bench.robustness`.

Attribution drift compares the candidate's saliency maps with the teacher's on the first
``attribution_samples`` evaluation inputs: gradient x input when the candidate is a torch
model, occlusion through ONNX Runtime when it exists only as ONNX (the teacher's occlusion
maps come from its own ONNX export, so both sides use the same method). A mean Spearman rho
below ``attribution_threshold`` flags the stage in the report.

A row whose ONNX file has the same bytes as an earlier row's, attacked from a torch model
with the same weights (the export stage's file is the previous stage's scratch export,
byte for byte), gets that row's attack results (marked ``reused``) instead of a rerun:
every attack is seeded, so a rerun would give the same figures. Likewise FGSM/PGD examples
are crafted once per source model: the int8 file is attacked with its fp32 parent's.

For the same reason a probe given a ``cache_folder`` keeps each row's attack results on disk,
keyed by everything that decides them (file bytes, source weights, settings, the sample, the
library versions): a rerun of the same recipe (the demo with its teacher cached) reads them
back, marked ``cached``, instead of attacking the same files again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np

from edgepack.bench.robustness import RobustnessConfig, evaluate_robustness, robustness_session
from edgepack.bench.robustness.attribution import gradient_x_input, occlusion, spearman
from edgepack.bench.robustness.predictions import ort_predict
from edgepack.bench.robustness.evaluate import not_applicable_reason


class RobustnessProbe:
    """The run's robustness settings, its fixed sample, and the teacher's saliency maps."""

    def __init__(self, config: RobustnessConfig, inputs: np.ndarray, labels: np.ndarray,
                 teacher, teacher_onnx: Path, cache_folder: Path | None = None):
        self.config = config
        self.cache_folder = Path(cache_folder) if cache_folder is not None else None
        self.inputs, self.labels = inputs, labels
        self.teacher, self.teacher_onnx = teacher, Path(teacher_onnx)
        n = config.attribution_samples
        self._sample = (np.ascontiguousarray(inputs[:n], dtype=np.float32),
                        np.asarray(labels[:n]).astype(np.int64))
        self._teacher_maps: dict[str, np.ndarray] = {}
        self._results: dict[tuple[str, str], dict] = {}   # (file, source weights) -> attacks
        self._crafted: tuple[str, dict] = ("", {})   # (source weights, FGSM/PGD examples)

    def measure(self, onnx_path: Path, module=None, source=None,
                attribution: bool = True) -> dict:
        """``{"robustness": ..., "attribution": ...}`` for one artifact (empty when off).

        ``module``: the candidate's torch model, if it is one; ``source``: the torch model
        FGSM/PGD are crafted on (``module`` itself, or the model ``onnx_path`` came from);
        ``attribution=False`` for the teacher itself.
        """
        out: dict = {}
        attribution = attribution and self.config.attribution_samples > 0
        if not self.config.enabled and not attribution:
            return out
        session = robustness_session(onnx_path)
        reason = not_applicable_reason(session, self.labels)
        if reason:
            return {"robustness": {"applicable": False, "reason": reason}}
        if self.config.enabled:
            crafted_on = "the model itself" if module is not None else "its torch parent"
            out["robustness"] = self.attacks(session, onnx_path, source, crafted_on)
        if attribution:
            out["attribution"] = self.attribution(session, module)
        return out

    def attacks(self, session, onnx_path: Path, source, crafted_on: str) -> dict:
        """Every attack on one file; an earlier row's result for the same bytes and source."""
        key = (artifact_digest(onnx_path), weights_digest(source))
        if key in self._results:
            return {**self._results[key], "crafted_on": crafted_on, "reused": True,
                    "seconds": 0.0, "cpu_seconds": 0.0}
        stored = self._read_stored(key)
        if stored is not None:
            self._results[key] = stored
            return {**stored, "crafted_on": crafted_on, "cached": True,
                    "seconds": 0.0, "cpu_seconds": 0.0}
        if self._crafted[0] != key[1]:   # examples kept for the latest source only (memory)
            self._crafted = (key[1], {})
        result = evaluate_robustness(session, self.inputs, self.labels, self.config,
                                     source=source, crafted_on=crafted_on,
                                     crafted=self._crafted[1])
        self._results[key] = dict(result)
        self._store(key, result)
        return result

    def _stored_path(self, key: tuple[str, str]) -> Path | None:
        if self.cache_folder is None:
            return None
        import onnxruntime
        import torch

        x, y = self.inputs, self.labels
        decided = {"file": key[0], "source": key[1], "config": self.config.to_dict(),
                   "sample": hashlib.sha256(np.ascontiguousarray(x).tobytes()
                                            + np.ascontiguousarray(y).tobytes()).hexdigest(),
                   "versions": [onnxruntime.__version__, torch.__version__, np.__version__],
                   "format": 1}
        name = hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:24]
        return self.cache_folder / f"{name}.json"

    def _read_stored(self, key: tuple[str, str]) -> dict | None:
        path = self._stored_path(key)
        if path is None or not path.is_file():
            return None
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # a damaged entry is measured again

    def _store(self, key: tuple[str, str], result: dict) -> None:
        from edgepack.core.files import atomic_write_json

        path = self._stored_path(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(path, {k: v for k, v in result.items()
                                     if k not in ("crafted_on", "reused", "cached")})
        except (OSError, TypeError, ValueError):
            pass  # a read-only cache folder only costs time

    def attribution(self, session, module=None) -> dict:
        """Mean Spearman rho between this artifact's saliency maps and the teacher's."""
        started, cpu_started = time.perf_counter(), time.process_time()
        x, y = self._sample
        if module is not None:
            method, maps = "gradient x input", gradient_x_input(module, x, y)
        else:
            method, maps = "occlusion", occlusion(ort_predict(session), x, y, self._baseline)
        rho = float(spearman(maps, self._teacher_map(method)).mean())
        return {"rho": rho, "method": method, "samples": int(len(x)),
                "threshold": self.config.attribution_threshold,
                "flagged": rho < self.config.attribution_threshold,
                "seconds": time.perf_counter() - started,
                "cpu_seconds": time.process_time() - cpu_started}

    @property
    def _baseline(self) -> float:
        return float(self.inputs.mean())

    def _teacher_map(self, method: str) -> np.ndarray:
        if method not in self._teacher_maps:
            x, y = self._sample
            if method == "gradient x input":
                self._teacher_maps[method] = gradient_x_input(self.teacher, x, y)
            else:
                predict = ort_predict(robustness_session(self.teacher_onnx))
                self._teacher_maps[method] = occlusion(predict, x, y, self._baseline)
        return self._teacher_maps[method]


def artifact_digest(path: Path) -> str:
    """sha256 of an ONNX file and of the external data files it uses."""
    import onnx

    from edgepack.core.onnx_files import check_external_data

    path = Path(path)
    digest = hashlib.sha256(path.read_bytes())
    header = onnx.load(str(path), load_external_data=False)
    for data_file in check_external_data(header, path.parent):
        digest.update(data_file.read_bytes())
    return digest.hexdigest()


def weights_digest(module) -> str:
    """sha256 of a torch model's state (names and values); "" for no model."""
    if module is None:
        return ""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
