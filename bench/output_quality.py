"""What a model's outputs on the evaluation data say: top-1 accuracy against labels, errors
against reference outputs, and rows that hold NaN or Inf (which make any figure meaningless).

``model`` here is a :class:`edgepack.bench.runner.ModelUnderTest`: its ONNX Runtime
``session``, its ``path``, its ``eval_feeds`` and its ``config`` (the batch size).
"""

from __future__ import annotations

import numpy as np

from edgepack.bench.inputs import batches, check_labels
from edgepack.bench.session import run_failure

EVAL_BATCH = 64  # rows per run when evaluating accuracy on a model with a free batch size


def _input_is_fixed_batch(session) -> int | None:
    dims = [i.shape[0] for i in session.get_inputs() if i.shape]
    fixed = [d for d in dims if isinstance(d, int) and d > 0]
    return fixed[0] if fixed else None


def first_outputs(model, batch: int) -> np.ndarray:
    """The first output for every row of the evaluation data, run in batches."""
    fixed = _input_is_fixed_batch(model.session)
    size = fixed or batch
    outs = []
    for start, stop, chunk in batches(model.eval_feeds, size, fixed=fixed is not None):
        try:
            out = model.session.run(None, chunk)[0]
        except Exception as exc:
            raise run_failure(model.path, chunk, exc, "evaluate") from exc
        outs.append(np.asarray(out)[: stop - start])
    return np.concatenate(outs)


def top1_accuracy(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose largest output is the label; labels outside the model's classes
    are refused (they would silently count as wrong)."""
    logits = outputs.reshape(len(labels), -1)
    check_labels(labels, logits.shape[1])
    return float((logits.argmax(1) == labels).mean())


def nonfinite_rows(outputs: np.ndarray) -> int:
    """How many rows of the outputs hold NaN or Inf."""
    if not np.issubdtype(outputs.dtype, np.floating):
        return 0
    return int((~np.isfinite(outputs.reshape(len(outputs), -1))).any(1).sum())


def reference_errors(outputs: np.ndarray, reference: np.ndarray) -> dict:
    """Max/mean absolute error and mean cosine similarity against reference outputs."""
    actual = outputs.astype(np.float64).reshape(len(outputs), -1)
    ref = reference.astype(np.float64).reshape(len(reference), -1)
    if actual.shape != ref.shape:
        raise ValueError(f"reference outputs have shape {list(reference.shape)}; the model "
                         f"gives {list(outputs.shape)}")
    diff = np.abs(actual - ref)
    cos = (actual * ref).sum(1) / np.maximum(
        np.linalg.norm(actual, axis=1) * np.linalg.norm(ref, axis=1), 1e-12)
    return {"max_abs_error": float(diff.max()), "mean_abs_error": float(diff.mean()),
            "mean_cosine": float(cos.mean())}


def output_quality(model, data: dict) -> dict:
    """What the evaluation data says of the model's first output: ``accuracy`` against
    ``labels``, errors against ``reference`` outputs; NaN or Inf rows fail it."""
    if model.eval_feeds is None or not ({"labels", "reference"} & set(data)):
        return {}
    outputs = first_outputs(model, max(model.config.batch, EVAL_BATCH))
    quality: dict = {"eval_rows": int(len(outputs))}
    bad = nonfinite_rows(outputs)
    if bad:  # an accuracy computed on NaN outputs would be a number that means nothing
        quality.update(accuracy=None, nonfinite_rows=bad, failed=True,
                       nonfinite_outputs=[model.session.get_outputs()[0].name],
                       warning=f"outputs hold NaN or Inf in {bad} of {len(outputs)} rows; "
                               "accuracy not reported")
        return quality
    if "labels" in data:
        quality["accuracy"] = top1_accuracy(outputs, data["labels"])
    if "reference" in data:
        quality["reference"] = reference_errors(outputs, data["reference"])
    return quality
