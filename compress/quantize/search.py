"""Accuracy-aware quantization: keep the nodes that add the most error in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from compress.quantize.backends import quantize_into
from compress.quantize.config import RANKING_ROWS, QuantizeConfig
from compress.quantize.data import EvaluationSet, _FeedReader, evaluate


def _relative_errors(float_acts: dict, quant_acts: dict) -> dict[str, float]:
    """``||fp32 - quantized|| / ||fp32||`` for every activation both models hold."""
    errors = {}
    for name, float_values in float_acts.items():
        if name not in quant_acts:
            continue
        ref = np.concatenate([v.ravel() for v in float_values]).astype(np.float64)
        got = np.concatenate([v.ravel() for v in quant_acts[name]]).astype(np.float64)
        if ref.shape == got.shape:
            noise = np.linalg.norm(np.nan_to_num(ref - got, nan=1e30, posinf=1e30))
            errors[name] = float(noise / max(np.linalg.norm(ref), 1e-12))
    return errors


def _collect(model_path: Path, feeds, work: Path) -> dict:
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        modify_model_output_intermediate_tensors,
    )

    augmented = work / f"{model_path.stem}.activations.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(augmented))
    return collect_activations(str(augmented), _FeedReader(feeds))


def _first_rows(feeds: list[dict], rows: int) -> list[dict]:
    out, taken = [], 0
    for feed in feeds:
        if taken >= rows:
            break
        out.append(feed)
        taken += next(iter(feed.values())).shape[0]
    return out


def rank_nodes_by_error(float_path: Path, quant_path: Path, feeds, work: Path) -> list[dict]:
    """Nodes ranked by the quantization error each adds, worst first.

    A node's error is the relative error of its output (fp32 model vs quantized model, same
    inputs) minus the largest relative error among its inputs: what the node itself adds, so
    a layer late in the graph is not blamed for the error it inherits. In QDQ graphs a
    tensor's Q/DQ pair belongs to the node that produces it, so keeping a node in float may
    take its producer too; the search adds one node per step and records every step.
    """
    feeds = _first_rows(feeds, RANKING_ROWS)
    errors = _relative_errors(_collect(float_path, feeds, work), _collect(quant_path, feeds, work))
    ranking = []
    for node in onnx.load(str(float_path)).graph.node:
        if not node.name or not node.output or node.output[0] not in errors:
            continue
        inherited = max((errors.get(i, 0.0) for i in node.input), default=0.0)
        out_error = errors[node.output[0]]
        ranking.append({"node": node.name, "op": node.op_type,
                        "output_error": round(out_error, 6),
                        "added_error": round(max(0.0, out_error - inherited), 6)})
    ranking.sort(key=lambda r: r["added_error"], reverse=True)
    return [r for r in ranking if r["added_error"] > 0]


def _step(path: Path, float_nodes: list[str], evaluation: EvaluationSet,
          reference: float) -> dict:
    score = evaluate(path, evaluation)
    return {"float_nodes": list(float_nodes), "accuracy": round(score, 6),
            "drop": round(reference - score, 6), "path": path}


def accuracy_aware_quantize(prepared: Path, config: QuantizeConfig, feeds,
                            evaluation: EvaluationSet, tolerance: float,
                            work: Path) -> tuple[Path, dict]:
    """Quantize; while the drop exceeds ``tolerance``, keep the next-worst node in float.

    Returns the first step within tolerance, or the best step when none is, with a record
    of every step (nodes kept in float, accuracy, drop).
    """
    reference = evaluate(prepared, evaluation)
    first = work / "step00.onnx"
    quantize_into(prepared, first, config, feeds)
    steps = [_step(first, [], evaluation, reference)]
    ranking: list[dict] = []
    if steps[0]["drop"] > tolerance:
        ranking = rank_nodes_by_error(prepared, first, evaluation.batches, work)
    float_nodes: list[str] = []
    for candidate in ranking[:config.max_float_nodes]:
        if steps[-1]["drop"] <= tolerance:
            break
        float_nodes.append(candidate["node"])
        path = work / f"step{len(steps):02d}.onnx"
        quantize_into(prepared, path, config, feeds, exclude=float_nodes)
        steps.append(_step(path, float_nodes, evaluation, reference))
    within = [s for s in steps if s["drop"] <= tolerance]
    best = within[0] if within else max(steps, key=lambda s: (s["accuracy"],
                                                               -len(s["float_nodes"])))
    record = {"metric": evaluation.metric, "float_accuracy": round(reference, 6),
              "tolerance": tolerance, "met_tolerance": bool(within),
              "kept_in_float": best["float_nodes"], "accuracy": best["accuracy"],
              "steps": [{k: v for k, v in s.items() if k != "path"} for s in steps],
              "ranking": ranking[:max(config.max_float_nodes, 10)],
              "evaluation_rows": int(sum(next(iter(b.values())).shape[0]
                                         for b in evaluation.batches))}
    if not within:
        record["note"] = (f"no step met the tolerance {tolerance} (best drop "
                          f"{best['drop']:.4f} with {len(best['float_nodes'])} nodes in float, "
                          f"{len(ranking)} candidates, max_float_nodes="
                          f"{config.max_float_nodes}); returning the best step")
    return best["path"], record
