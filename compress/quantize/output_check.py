"""The output check: the quantized model against its fp32 input, on held-out inputs.

Every quantization ends here. Both models run on inputs the calibration did not see (a split
of the calibration data, the evaluation data when given, or generated inputs when there is
no data), and every output is compared:

- ``mean_cosine``: cosine similarity per row (the row's outputs flattened), averaged; the
  figure gated by ``min_cosine`` (default 0.99, for embeddings and logits alike);
- ``centred_cosine``: the same on outputs centred over the batch. A component shared by every
  row (large in random-weight networks and in some embeddings) makes the raw cosine look fine
  while input-dependent changes are lost; the centred figure shows them. It is reported, and
  gated only when ``min_centred_cosine`` is set: on random-weight networks the shared component
  is nearly all of the output, so the centred figure is mostly noise there;
- ``norm_ratio``: the size of each quantized output row against the fp32 one, averaged;
  the cosine cannot see a change of scale (a weight clamped to float16's range scales every
  output), so a change beyond ``max_norm_change`` (default 20%) either way fails;
- ``max_abs_error`` and ``mean_abs_error``;
- ``top1_agreement`` for classifier-like outputs (2-D ``[batch, classes]``), gated by
  ``min_top1_agreement`` once there are :data:`MIN_TOP1_ROWS` held-out rows (on two rows
  one flip is 50 %).

Sequence outputs of models with an ``attention_mask`` input are compared on real tokens
only: what a padded position holds is never used downstream.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgepack.compress.quantize.quantize_config import QuantizationCheckError
from edgepack.compress.quantize.data import _cpu_session, _fixed_batch

NOT_CLASSIFIER_WORDS = ("hidden", "state", "embed", "pool", "feature", "token")
MIN_TOP1_ROWS = 16  # fewer held-out rows: top-1 agreement is reported, not gated
MAX_NORM_CHANGE = 0.2  # default: outputs more than 20% larger or smaller than fp32's fail


class OutputCheckFailed(QuantizationCheckError):
    """The quantized model's outputs differ from the fp32 model's beyond the tolerance."""

    exit_code = 1

    def __init__(self, message: str, figures: dict):
        super().__init__(message)
        self.figures = figures


# --------------------------------------------------------------------------- inputs


def _rows(batch: dict) -> int:
    return int(next(iter(batch.values())).shape[0])


def split_held_out(batches: list[dict], fraction: float,
                   fixed_batch: bool = False) -> tuple[list[dict], list[dict]]:
    """Split checked batches into (calibration, held-out) by rows: the last ``fraction`` of
    the rows (at least one) are held out; calibration keeps at least one row. A model with a
    fixed batch size is split by whole batches.

    With a single row (or batch) there is nothing to hold out: the calibration gets it and
    the held-out list is empty (the caller then generates inputs for the check).
    """
    if fixed_batch:
        held = min(len(batches) - 1, max(1, int(round(len(batches) * fraction))))
        return (batches, []) if held <= 0 else (batches[:-held], batches[-held:])
    total = sum(_rows(b) for b in batches)
    held = min(total - 1, max(1, int(round(total * fraction))))
    if held <= 0:
        return batches, []
    keep = total - held
    calibration, held_out, seen = [], [], 0
    for batch in batches:
        rows = _rows(batch)
        cut = min(rows, max(0, keep - seen))
        if cut > 0:
            calibration.append({k: v[:cut] for k, v in batch.items()})
        if cut < rows:
            held_out.append({k: v[cut:] for k, v in batch.items()})
        seen += rows
    return calibration, held_out


def generated_batches(model_path: Path, rows: int, seed: int = 1) -> list[dict]:
    """``rows`` generated inputs for a model without data (bench's input generator: floats
    ~N(0,1), token ids inside the vocabulary, masks of ones), in the model's batch size."""
    import onnx

    from edgepack.bench.inputs import generate_inputs, token_vocab_sizes

    session = _cpu_session(model_path)
    vocab = token_vocab_sizes(onnx.load(str(model_path), load_external_data=False))
    fixed = _fixed_batch(session)
    if fixed is None:
        return [generate_inputs(session, rows, seed=seed, vocab_sizes=vocab,
                                model_name=model_path.name)]
    return [generate_inputs(session, fixed, seed=seed + i, vocab_sizes=vocab,
                            model_name=model_path.name)
            for i in range(max(1, rows // fixed))]


# --------------------------------------------------------------------------- figures


def _outputs(model_path: Path, batches: list[dict]) -> tuple[list[str], list[np.ndarray]]:
    session = _cpu_session(model_path)
    names = [o.name for o in session.get_outputs()]
    runs = [session.run(None, {k: v for k, v in b.items() if k != "labels"}) for b in batches]
    return names, [np.concatenate([np.asarray(r[i]) for r in runs]) for i in range(len(names))]


def _token_mask(batches: list[dict], value: np.ndarray) -> np.ndarray | None:
    """The attention mask broadcast to a sequence output ``[batch, seq, ...]``, if any."""
    if not all("attention_mask" in b for b in batches) or value.ndim < 3:
        return None
    mask = np.concatenate([b["attention_mask"] for b in batches])
    if mask.ndim != 2 or mask.shape != value.shape[:2]:
        return None
    return mask.reshape(mask.shape + (1,) * (value.ndim - 2)).astype(np.float64)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    cos = np.where(both_zero, 1.0, (a * b).sum(1) / np.maximum(norms, 1e-30))
    return float(np.nan_to_num(cos, nan=-1.0).mean())


def _norm_ratio(a: np.ndarray, b: np.ndarray) -> float:
    """Mean of |quantized row| / |fp32 row|: the scale the cosine cannot see (1 when the
    outputs keep their size; a weight clamped to a narrower type's range shows here)."""
    ref = np.linalg.norm(b, axis=1)
    got = np.linalg.norm(a, axis=1)
    keep = ref > 0
    return float((got[keep] / ref[keep]).mean()) if keep.any() else 1.0


def is_classifier_like(name: str, value: np.ndarray) -> bool:
    """A 2-D ``[batch, classes]`` float output whose name does not say embedding/state."""
    return (value.ndim == 2 and value.shape[1] >= 2
            and not any(word in name.lower() for word in NOT_CLASSIFIER_WORDS))


def output_figures(name: str, ref: np.ndarray, got: np.ndarray, mask) -> dict:
    """The figures for one output (see the module docstring)."""
    ref = ref.astype(np.float64)
    got = np.nan_to_num(got.astype(np.float64), nan=1e30, posinf=1e30, neginf=-1e30)
    if mask is not None:
        ref, got = ref * mask, got * mask
    a, b = got.reshape(len(got), -1), ref.reshape(len(ref), -1)
    diff = np.abs(a - b)
    figures = {"rows": int(len(a)), "mean_cosine": round(_cosine(a, b), 6),
               "norm_ratio": round(_norm_ratio(a, b), 6),
               "centred_cosine": (round(_cosine(a - b.mean(0), b - b.mean(0)), 6)
                                  if len(a) > 1 else None),
               "max_abs_error": float(diff.max()) if diff.size else 0.0,
               "mean_abs_error": float(diff.mean()) if diff.size else 0.0,
               "masked_padding": mask is not None}
    if is_classifier_like(name, ref):
        figures["top1_agreement"] = round(float((a.argmax(1) == b.argmax(1)).mean()), 6)
    return figures


def reference_outputs(float_path: Path, batches: list[dict]) -> tuple[list[str], list]:
    """The fp32 model's outputs on the held-out batches (computed once per quantization)."""
    return _outputs(float_path, batches)


def compare_models(float_path: Path, quant_path: Path, batches: list[dict],
                   reference: tuple[list[str], list] | None = None) -> dict:
    """Figures per float output of the quantized model against the fp32 model.

    Raises :class:`QuantizationCheckError` when the quantized model gives NaN or Inf.
    """
    names, ref = reference or _outputs(float_path, batches)
    _, got = _outputs(quant_path, batches)
    out = {}
    for name, r, g in zip(names, ref, got):
        if not np.issubdtype(r.dtype, np.floating):
            continue
        if not np.isfinite(g).all():
            raise QuantizationCheckError(f"the quantized model of {float_path.name} gives NaN "
                                         f"or Inf in output {name!r} on held-out inputs")
        out[name] = output_figures(name, r, g, _token_mask(batches, r))
    return out


# --------------------------------------------------------------------------- verdict


def failures(figures: dict, min_cosine: float, min_top1: float, min_centred: float | None,
             max_norm_change: float = MAX_NORM_CHANGE) -> list[str]:
    """What is out of tolerance, one phrase per output and figure."""
    found = []
    for name, f in figures.items():
        if f["mean_cosine"] < min_cosine:
            found.append(f"output {name!r}: mean cosine {f['mean_cosine']:.4f} < {min_cosine}")
        ratio = f.get("norm_ratio", 1.0)
        if abs(ratio - 1.0) > max_norm_change:
            found.append(f"output {name!r}: outputs {ratio:.3f}x the size of fp32's (the "
                         f"cosine does not see scale; at most {max_norm_change:.0%} change)")
        centred = f.get("centred_cosine")
        if min_centred is not None and centred is not None and centred < min_centred:
            found.append(f"output {name!r}: centred cosine {centred:.4f} < {min_centred}")
        top1 = f.get("top1_agreement")
        if top1 is not None and top1 < min_top1 and f["rows"] >= MIN_TOP1_ROWS:
            found.append(f"output {name!r}: top-1 agreement {top1:.3f} < {min_top1}")
    return found


def describe(figures: dict) -> str:
    """One line of figures per output."""
    lines = []
    for name, f in figures.items():
        centred = "n/a" if f["centred_cosine"] is None else f"{f['centred_cosine']:.4f}"
        top1 = f" top-1 agreement {f['top1_agreement']:.3f}" if "top1_agreement" in f else ""
        lines.append(f"{name}: mean cosine {f['mean_cosine']:.4f} (centred {centred}), "
                     f"max abs error {f['max_abs_error']:.4g}, mean abs error "
                     f"{f['mean_abs_error']:.4g}{top1} on {f['rows']} held-out rows")
    return "; ".join(lines)


def likely_cause(method: str, settings, transformer: bool) -> str:
    """The likeliest reason for a failed check, from the method and the settings that ran."""
    from edgepack.compress.quantize.methods import METHODS

    spec = METHODS.get(method)
    causes = spec.likely_causes(settings, transformer)
    if not causes and spec.repairable:
        causes.append("some layers lose too much in 8 bits; --accuracy-aware keeps the ones "
                      "that most improve this check in float")
    if not causes:
        causes.append(f"{method} loses too much on this model; try another --mode")
    return "likely cause: " + "; ".join(causes)
