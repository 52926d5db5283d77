"""Robustness and attribution drift of every stage of a run, on one fixed sample.

The pipeline makes one :class:`RobustnessProbe` per run and calls :meth:`measure` for the
teacher and for each stage's candidate. Attacks run on the candidate's ONNX file (for torch
stages the scratch export that is also timed), through ONNX Runtime; FGSM/PGD are crafted
on the torch model the candidate is, or was exported from (a transfer attack for int8
files); the black-box Square Attack needs no torch model. See :mod:`bench.robustness`.

Attribution drift compares the candidate's saliency maps with the teacher's on the first
``attribution_samples`` evaluation inputs: gradient x input when the candidate is a torch
model, occlusion through ONNX Runtime when it exists only as ONNX (the teacher's occlusion
maps come from its own ONNX export, so both sides use the same method). A mean Spearman rho
below ``attribution_threshold`` flags the stage in the report.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from bench.robustness import RobustnessConfig, evaluate_robustness, robustness_session
from bench.robustness.attribution import gradient_x_input, occlusion, spearman
from bench.robustness.blackbox import ort_predict
from bench.robustness.evaluate import not_applicable_reason


class RobustnessProbe:
    """The run's robustness settings, its fixed sample, and the teacher's saliency maps."""

    def __init__(self, config: RobustnessConfig, inputs: np.ndarray, labels: np.ndarray,
                 teacher, teacher_onnx: Path):
        self.config = config
        self.inputs, self.labels = inputs, labels
        self.teacher, self.teacher_onnx = teacher, Path(teacher_onnx)
        n = config.attribution_samples
        self._sample = (np.ascontiguousarray(inputs[:n], dtype=np.float32),
                        np.asarray(labels[:n]).astype(np.int64))
        self._teacher_maps: dict[str, np.ndarray] = {}

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
            out["robustness"] = evaluate_robustness(session, self.inputs, self.labels,
                                                    self.config, source=source,
                                                    crafted_on=crafted_on)
        if attribution:
            out["attribution"] = self.attribution(session, module)
        return out

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
