"""Accuracy-aware quantization: keep the nodes that add the most error in float."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from edgepack.compress.quantize.data import FeedReader
from edgepack.compress.quantize.methods import METHODS, quantize_into
from edgepack.compress.quantize.quantize_config import RANKING_ROWS


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
    from onnxruntime.quantization.qdq_loss_debug import (collect_activations,
                                                         modify_model_output_intermediate_tensors)

    augmented = work / f"{model_path.stem}.activations.onnx"
    modify_model_output_intermediate_tensors(str(model_path), str(augmented))
    return collect_activations(str(augmented), FeedReader(feeds))


def _first_rows(feeds: list[dict], rows: int) -> list[dict]:
    """The first ``rows`` rows of a list of batches."""
    out, taken = [], 0
    for feed in feeds:
        if taken >= rows:
            break
        size = next(iter(feed.values())).shape[0]
        out.append({k: v[:rows - taken] for k, v in feed.items()} if taken + size > rows
                   else feed)
        taken += size
    return out


def rank_nodes_by_error(float_path: Path, quant_path: Path, feeds, work: Path) -> list[dict]:
    """Nodes ranked by the quantization error each adds, worst first.

    A node's error is the relative error of its output (fp32 model vs quantized model, same
    inputs) minus the largest relative error among its inputs: what the node itself adds, so
    a layer late in the graph is not blamed for the error it inherits. In QDQ graphs a
    tensor's Q/DQ pair belongs to the node that produces it, so keeping a node in float may
    take its producer too; the search adds one node per step and records every step.
    """
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


def _producers(model_path: Path) -> tuple[dict[str, list[str]], dict[str, str]]:
    """For each node, the named nodes producing its inputs; and each node's op type."""
    graph = onnx.load(str(model_path), load_external_data=False).graph
    made_by = {out: n.name for n in graph.node for out in n.output if n.name}
    producers = {n.name: [made_by[i] for i in n.input if i in made_by] for n in graph.node}
    return producers, {n.name: n.op_type for n in graph.node}


def ranking_rows(feeds: list[dict]) -> int:
    """Rows used to rank nodes: every activation of every node is held in memory, so inputs
    with long rows (token sequences, images) get fewer."""
    per_row = max(int(v[0].size) for v in feeds[0].values() if v.ndim) if feeds else 1
    return RANKING_ROWS if per_row <= 256 else 8


def accuracy_aware_quantize(prepared: Path, method: str, settings, feeds, held_out,
                            judge, first: Path, work: Path, exclude=(), include=None
                            ) -> tuple[Path, dict]:
    """Repair a model that failed the output check: keep the node adding the most error in
    float, quantize again, check again; stop at the first model that passes.

    ``judge(path)`` is the output check: ``(passed, score, figures)``, score being the
    smallest mean cosine over the outputs (or the accuracy with labelled data). ``first``
    is the model that failed. ``method`` and its resolved ``settings`` quantize each step;
    only the ops the method quantizes are candidates (keeping any other in float changes
    nothing). Returns the first passing step, or the best step when none passes (the caller
    refuses it), with a record of every step.
    """
    passed, score, figures = judge(first)
    steps = [{"float_nodes": [], "passed": passed, "score": score, "path": first,
              "figures": figures}]
    ranking = [] if passed else rank_nodes_by_error(
        prepared, first, _first_rows(held_out, ranking_rows(held_out)), work)
    float_nodes: list[str] = []
    producers, ops = _producers(prepared)
    quantizable = METHODS.get(method).quantizable_ops()
    max_nodes = settings.max_float_nodes

    def eligible(node: str) -> bool:
        return (ops.get(node) in quantizable and node not in exclude and node not in float_nodes
                and (include is None or node in include))

    ranking = [r for r in ranking if eligible(r["node"])]
    queue = [r["node"] for r in ranking]
    while queue and len(float_nodes) < max_nodes and not steps[-1]["passed"]:
        node = queue.pop(0)
        if not eligible(node):
            continue
        float_nodes.append(node)
        path = work / f"step{len(steps):02d}.onnx"
        quantize_into(prepared, path, method, settings, feeds,
                      exclude=[*exclude, *float_nodes], include=include)
        passed, score, figures = judge(path)
        if not passed and score <= steps[-1]["score"]:
            # No better: the node's input is still quantized by the node producing it (in
            # QDQ a tensor's Q/DQ pair belongs to its producer), so that producer is next.
            queue = [p for p in producers.get(node, []) if eligible(p)] + queue
        steps.append({"float_nodes": list(float_nodes), "passed": passed, "score": score,
                      "path": path, "figures": figures})
    within = [s for s in steps if s["passed"]]
    best = within[0] if within else max(steps, key=lambda s: (s["score"],
                                                               -len(s["float_nodes"])))
    record = {"metric": "output check", "met_tolerance": bool(within),
              "kept_in_float": best["float_nodes"], "score": best["score"],
              "steps": [{k: v for k, v in s.items() if k not in ("path", "figures")}
                        for s in steps],
              "ranking": ranking[:max(max_nodes, 10)]}
    if not within:
        record["note"] = (f"no step passed the output check (best score {best['score']:.4f} "
                          f"with {len(best['float_nodes'])} nodes in float, {len(ranking)} "
                          f"candidates, max_float_nodes={max_nodes})")
    return best["path"], {**record, "figures": best["figures"]}
