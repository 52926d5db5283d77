"""Calibration and evaluation data, checked against the model's inputs, and evaluation on
ONNX Runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def _cpu_session(path: Path):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def _fixed_batch(session) -> int | None:
    """The batch size the model's inputs fix, or None when the batch axis is symbolic."""
    dims = [i.shape[0] for i in session.get_inputs() if i.shape]
    fixed = [d for d in dims if isinstance(d, int) and d > 0]
    return fixed[0] if fixed else None


def _as_array(value) -> np.ndarray:
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _batch_to_arrays(batch, names: list[str], source: str) -> dict[str, np.ndarray]:
    """One batch as ``{name: array}``: a dict, or ``(inputs, labels)``, or bare inputs."""
    if isinstance(batch, dict):
        return {k: _as_array(v) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        inputs, labels = batch[0], (batch[1] if len(batch) > 1 else None)
    else:
        inputs, labels = batch, None
    if len(names) != 1:
        raise ValueError(f"{source}: batches must be dicts keyed by input name for a model "
                         f"with several inputs ({', '.join(names)})")
    arrays = {names[0]: _as_array(inputs)}
    if labels is not None:
        arrays["labels"] = _as_array(labels)
    return arrays


def checked_batches(model_path: Path, data, limit: int, source: str) -> list[dict[str, np.ndarray]]:
    """Turn user data into checked batches (feeds, plus ``labels`` when given), ``limit`` rows.

    ``data``: an iterable of feed dicts (``{input_name: array}``), of ``(inputs, labels)``
    batches (torch tensors or arrays, single-input models), or one dict of arrays. Each batch
    is checked against the model inputs (name, rank, dtype), naming the input and the expected
    shape and type; a partial last batch is fine; an empty set is refused.
    """
    from edgepack.bench.inputs import check_feeds

    session = _cpu_session(model_path)
    names = [i.name for i in session.get_inputs()]
    batches: list[dict[str, np.ndarray]] = []
    rows = 0
    for batch in [data] if isinstance(data, dict) else data:
        arrays = _batch_to_arrays(batch, names, source)
        feeds = check_feeds(session, arrays, source)
        take = min(limit - rows, next(iter(feeds.values())).shape[0])
        chunk = {k: v[:take] for k, v in feeds.items()}
        if "labels" in arrays:
            chunk["labels"] = arrays["labels"][:take]
        batches.append(chunk)
        rows += take
        if rows >= limit:
            break
    if not batches:
        raise ValueError(f"{source} is empty (0 samples); quantization needs representative "
                         "inputs")
    return _rebatch(batches, _fixed_batch(session), source)


def _rebatch(batches: list[dict], fixed: int | None, source: str) -> list[dict]:
    """Split batches into the model's fixed batch size, when it has one."""
    if fixed is None:
        return batches
    out = []
    for batch in batches:
        rows = next(iter(batch.values())).shape[0]
        out += [{k: v[s:s + fixed] for k, v in batch.items()}
                for s in range(0, rows - fixed + 1, fixed)]
    if not out:
        raise ValueError(f"{source} has fewer rows than the model's fixed batch size {fixed}")
    return out


def _feeds_only(batches: list[dict]) -> list[dict]:
    return [{k: v for k, v in b.items() if k != "labels"} for b in batches]


@dataclass
class EvaluationSet:
    """Evaluation batches and the metric they support: top-1 accuracy with labels, else
    the mean cosine similarity of the first output to the fp32 model's."""

    batches: list[dict]
    labels: np.ndarray | None
    reference: list[np.ndarray] | None = None   # fp32 first outputs, for the cosine metric

    @property
    def metric(self) -> str:
        return "top1" if self.labels is not None else "cosine"


def evaluation_set(model_path: Path, data, limit: int) -> EvaluationSet:
    batches = checked_batches(model_path, data, limit, "evaluation data")
    with_labels = ["labels" in b for b in batches]
    if any(with_labels) and not all(with_labels):
        raise ValueError("evaluation data: some batches have labels and some do not")
    labels = np.concatenate([b["labels"] for b in batches]) if all(with_labels) else None
    feeds = _feeds_only(batches)
    if labels is not None:
        from edgepack.bench.inputs import check_labels

        first = _cpu_session(model_path).run(None, feeds[0])[0]
        check_labels(labels, int(np.prod(first.shape[1:])), "evaluation data: labels")
    return EvaluationSet(feeds, labels)


def evaluate(model_path: Path, evaluation: EvaluationSet) -> float:
    """Top-1 accuracy (with labels) or mean cosine similarity to the fp32 outputs."""
    session = _cpu_session(model_path)
    outputs = [session.run(None, feed)[0] for feed in evaluation.batches]
    if evaluation.labels is not None:
        predicted = np.concatenate([o.reshape(o.shape[0], -1).argmax(1) for o in outputs])
        return float((predicted == evaluation.labels).mean())
    if evaluation.reference is None:
        evaluation.reference = outputs
        return 1.0
    actual = np.concatenate([o.reshape(o.shape[0], -1) for o in outputs]).astype(np.float64)
    ref = np.concatenate([o.reshape(o.shape[0], -1) for o in evaluation.reference]).astype(
        np.float64)
    cosine = (actual * ref).sum(1) / np.maximum(
        np.linalg.norm(actual, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return float(np.nan_to_num(cosine, nan=-1.0).mean())


class FeedReader:
    """An onnxruntime ``CalibrationDataReader`` over a list of feed dicts."""

    def __init__(self, feeds):
        self.feeds = feeds
        self.index = 0

    def get_next(self):
        if self.index >= len(self.feeds):
            return None
        self.index += 1
        return self.feeds[self.index - 1]

    def rewind(self):
        self.index = 0

    def __iter__(self):
        self.rewind()
        return iter(self.feeds)
