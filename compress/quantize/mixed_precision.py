"""Latency-aware mixed precision: keep in float the nodes that are slower in int8 here.

int8 is not faster everywhere: depthwise convolutions, small elementwise ops and the Q/DQ
conversions around them often run slower than their float versions on a CPU (the issue's
MobileNetV3-small and EfficientNet-B0 were 3.35x and 2.56x slower fully quantized). Which
nodes win depends on the CPU and on ONNX Runtime's kernels, so it is measured, not assumed:

1. the fp32 model and the fully quantized model each run under ONNX Runtime's profiler
   (same provider and threads as the speed check), and every node's kernel time is read;
2. each profiled node is charged to the original node it came from: ONNX Runtime names the
   nodes it fuses or rewrites after the original (``/layer1/conv/Conv_token_3``,
   ``.../Conv_output_0_DequantizeLinear``), so the longest original name that prefixes it
   owns it; a node's int8 time includes the Q/DQ conversions named after it. A compute op
   and the activations/residual adds ONNX Runtime fuses into it form one group (the fused
   node carries either name: ``/relu/Relu_output_0_nchwc`` in float, ``/conv/Conv_token_1``
   in int8), timed and decided together;
3. groups whose int8 time is larger than their float time (by ``MARGIN``) are kept in
   float, and the record lists each with both times.

The result is quantized again without those nodes; the caller's speed check then times it
against its input, end to end.
"""

from __future__ import annotations

import json
import tempfile
from collections import defaultdict
from pathlib import Path

import onnx

from edgepack.compress.quantize.quantize_config import QuantizeConfig

PROFILE_RUNS = 10
COMPUTE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")
# Ops ONNX Runtime fuses into the compute op before them (FusedConv, NCHWc Conv+Add+Relu,
# QLinearConv with its activation); the fused node may carry either name, so a compute op
# and the chain of these after it are timed and decided together.
FOLLOWERS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh",
             "Add", "Sum")
MARGIN = 1.25        # int8 must be this much slower to keep a node in float (profiles are noisy)
MIN_SHARE = 0.005    # differences below this share of the fp32 time are not worth a decision


def _profile(model_path: Path, config: QuantizeConfig, feeds: dict, runs: int) -> list[dict]:
    """ONNX Runtime's per-node kernel events (``name``, ``op``, ``us`` per run)."""
    from edgepack.bench.session import SessionOptions, make_session

    options = SessionOptions(provider=config.provider, threads=config.speed_threads,
                             inter_op_threads=1, spin_wait=True)
    warm = 2  # the first runs allocate and pack weights: profiled, then dropped
    with tempfile.TemporaryDirectory(prefix="profile.") as tmp:
        session = make_session(model_path, options, profile_dir=tmp)
        for _ in range(warm + runs):
            session.run(None, feeds)
        events = _kernel_events(json.loads(Path(session.end_profiling()).read_text()))
    per_run = len(events) // (warm + runs)  # every run of a static graph has the same nodes
    events = events[warm * per_run:]
    per_node: dict[str, dict] = {}
    for event in events:
        name = event["name"][: -len("_kernel_time")]
        entry = per_node.setdefault(name, {"name": name, "op": event["args"].get("op_name", ""),
                                           "us": 0.0})
        entry["us"] += float(event["dur"]) / runs
    return list(per_node.values())


def _kernel_events(trace: list) -> list[dict]:
    return [e for e in trace if e.get("cat") == "Node"
            and str(e.get("name", "")).endswith("_kernel_time")]


def name_owners(graph) -> dict[str, str]:
    """Prefix -> original node: ONNX Runtime names a rewritten node after the original node
    or after its output tensor (``/relu/Relu_output_0_nchwc``; exporters that name tensors
    apart from nodes make the second the only clue), and Q/DQ nodes after the tensor."""
    owners = {}
    for node in graph.node:
        for out in node.output:
            if out:
                owners[out] = node.name
        if node.name:
            owners[node.name] = node.name
    return owners


def _owner(name: str, prefixes: list[str], owners: dict[str, str]) -> str | None:
    prefix = next((p for p in prefixes if name.startswith(p)), None)
    return None if prefix is None else owners[prefix]


def charge_to_nodes(events: list[dict], owners: dict[str, str]) -> tuple[dict, float]:
    """Kernel time per original node (the longest node or output-tensor name prefixing the
    profiled name, see :func:`name_owners`), and the time no original node owns (layout
    reorders, the graph input's quantization)."""
    prefixes = sorted(owners, key=len, reverse=True)
    charged: dict[str, float] = defaultdict(float)
    unowned = 0.0
    for event in events:
        owner = _owner(event["name"], prefixes, owners)
        if owner is None:
            unowned += event["us"]
        else:
            charged[owner] += event["us"]
    return dict(charged), unowned


def quantized_owners(events: list[dict], owners: dict[str, str]) -> set[str]:
    """Original nodes that run at least one integer or Q/DQ kernel in the int8 model."""
    prefixes = sorted(owners, key=len, reverse=True)
    found = set()
    for event in events:
        if _is_integer_op(event["op"]):
            owner = _owner(event["name"], prefixes, owners)
            if owner is not None:
                found.add(owner)
    return found


def _is_integer_op(op: str) -> bool:
    """QLinear*/QGemm/QAttention/QuantizeLinear, DequantizeLinear, DynamicQuantize*,
    MatMulInteger, ConvInteger, MatMulIntegerToFloat."""
    return (op.startswith(("Q", "Dequantize", "DynamicQuantize"))
            or op.endswith(("Integer", "IntegerToFloat")))


def fusion_groups(graph) -> dict[str, str]:
    """Each node's group: a compute op with the single-consumer chain of activations and
    residual adds after it (what ONNX Runtime fuses); every other node is its own group."""
    consumers: dict[str, int] = defaultdict(int)
    for node in graph.node:
        for name in node.input:
            consumers[name] += 1
    made_by = {out: node for node in graph.node for out in node.output}
    op_of = {node.name: node.op_type for node in graph.node}
    group: dict[str, str] = {}
    for node in graph.node:  # topological order: producers are grouped first
        group[node.name] = node.name
        if node.op_type not in FOLLOWERS:
            continue
        for name in node.input:
            producer = made_by.get(name)
            if producer is None or consumers[name] != 1:
                continue
            root = group.get(producer.name, producer.name)
            if op_of.get(root) in COMPUTE_OPS:
                group[node.name] = root
                break
    return group


def _by_group(charged: dict[str, float], group: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for name, us in charged.items():
        out[group.get(name, name)] += us
    return dict(out)


def slower_in_int8(float_path: Path, int8_path: Path, config: QuantizeConfig,
                   feeds: dict) -> tuple[list[dict], dict]:
    """Nodes slower in int8 than in float (worst first), and the profile summary."""
    graph = onnx.load(str(float_path), load_external_data=False).graph
    names = [n.name for n in graph.node]
    owners = name_owners(graph)
    ops = {n.name: n.op_type for n in graph.node}
    group = fusion_groups(graph)
    members: dict[str, list[str]] = defaultdict(list)
    for name in names:
        members[group[name]].append(name)
    float_charged, float_unowned = charge_to_nodes(_profile(float_path, config, feeds,
                                                            PROFILE_RUNS), owners)
    int8_events = _profile(int8_path, config, feeds, PROFILE_RUNS)
    int8_charged, int8_unowned = charge_to_nodes(int8_events, owners)
    quantized = {group.get(n, n) for n in quantized_owners(int8_events, owners)}
    float_us, int8_us = _by_group(float_charged, group), _by_group(int8_charged, group)
    total = sum(float_us.values()) + float_unowned
    slower = []
    for root, q_us in int8_us.items():
        if root not in quantized:
            continue  # runs in float in both models: nothing to decide
        f_us = float_us.get(root, 0.0)
        if q_us > f_us * MARGIN and q_us - f_us > MIN_SHARE * total:
            slower.append({"node": root, "op": ops.get(root, ""), "nodes": members[root],
                           "float_us": round(f_us, 1), "int8_us": round(q_us, 1),
                           "why": f"{q_us:.0f} us per run quantized (its Q/DQ included) vs "
                                  f"{f_us:.0f} us in float, ONNX Runtime profiler"})
    slower.sort(key=lambda r: r["int8_us"] - r["float_us"], reverse=True)
    summary = {"profile_runs": PROFILE_RUNS, "float_total_us": round(total, 1),
               "int8_total_us": round(sum(int8_us.values()) + int8_unowned, 1),
               "int8_unowned_us": round(int8_unowned, 1),
               "groups_quantized": len(quantized)}
    return slower, summary


def by_op_type(rows: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for row in rows:
        counts[row["op"]] += 1
    return dict(counts)
