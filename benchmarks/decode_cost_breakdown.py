"""Where an offset-int4 decoder's decode step goes, against the genai builder's int4: the same
model timed as kept, without its offset corrections, and with its 8-bit lm_head made 4-bit.

The two variants compute wrong numbers on purpose (their corrections dropped, their lm_head's
blocks random): they are timing probes, never models to use. Each is written beside the
others in a temporary folder and all are timed interleaved in one process (1 thread, batch 1,
one decode step after a past of ``--past`` tokens, the median of 20 steps per round, the
median of ``--rounds`` rounds, the order flipped each round). Prints the CPU and its flags.

    python benchmarks/decode_cost_breakdown.py runs/smollm2/02-quantize-decoder/model/model.onnx \
        --builder /tmp/genai-int4/model.onnx
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edgepack.bench.envinfo import cpu_info  # noqa: E402

CORRECTION_SUFFIXES = ("_int4_offset_add", "_int4_offset_offset", "_int4_offset_reshape",
                       "_int4_offset_blocksum")


def without_corrections(model: onnx.ModelProto) -> onnx.ModelProto:
    """Each offset MatMulNBits writes its MatMul's output itself; the block sums, offset
    MatMuls and Adds are gone (timing only)."""
    graph = model.graph
    final = {n.input[0]: n.output[0] for n in graph.node
             if n.name.endswith("_int4_offset_add")}
    nodes = []
    for node in graph.node:
        if node.name.endswith(CORRECTION_SUFFIXES):
            continue
        if node.op_type == "MatMulNBits" and node.output[0] in final:
            node.output[0] = final[node.output[0]]
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    read = {name for node in nodes for name in node.input}
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return model


def with_4bit_head(model: onnx.ModelProto) -> onnx.ModelProto:
    """The 8-bit MatMulNBits (the lm_head) made 4-bit with random levels (timing only)."""
    rng = np.random.default_rng(0)
    for node in model.graph.node:
        attrs = {a.name: a for a in node.attribute}
        if node.op_type != "MatMulNBits" or attrs["bits"].i != 8:
            continue
        k, n, block = attrs["K"].i, attrs["N"].i, attrs["block_size"].i
        attrs["bits"].i = 4
        blocks = -(-k // block)
        packed = numpy_helper.from_array(
            rng.integers(0, 256, (n, blocks, block // 2), dtype=np.uint8), node.name + "_B4")
        scales = numpy_helper.from_array(
            (rng.random(n * blocks) * 0.01).astype(np.float32), node.name + "_scales4")
        node.input[1], node.input[2] = packed.name, scales.name
        model.graph.initializer.extend([packed, scales])
    return model


def _feeds(session, past: int) -> dict:
    feeds, rng = {}, np.random.default_rng(0)
    for info in session.get_inputs():
        if info.name == "input_ids":
            feeds[info.name] = np.array([[42]], np.int64)
        elif info.name == "attention_mask":
            feeds[info.name] = np.ones((1, past + 1), np.int64)
        elif info.name == "position_ids":
            feeds[info.name] = np.array([[past]], np.int64)
        else:   # past_key_values.N.key/value: [batch, kv heads, past, head size]
            heads, size = info.shape[1], info.shape[3]
            size = size if isinstance(size, int) else 64
            feeds[info.name] = rng.standard_normal((1, heads, past, size)).astype(np.float32)
    return feeds


def time_interleaved(paths: list[Path], past: int, rounds: int) -> list[float]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    sessions = [ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
                for p in paths]
    feeds = [_feeds(s, past) for s in sessions]
    for session, feed in zip(sessions, feeds):
        for _ in range(5):
            session.run(None, feed)
    medians: list[list[float]] = [[] for _ in paths]
    order = list(range(len(paths)))
    for _ in range(rounds):
        for index in order:
            steps = []
            for _ in range(20):
                start = time.perf_counter()
                sessions[index].run(None, feeds[index])
                steps.append(time.perf_counter() - start)
            medians[index].append(float(np.median(steps)))
        order.reverse()
    return [float(np.median(m)) for m in medians]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an offset-int4 decoder's model.onnx")
    parser.add_argument("--builder", type=Path, help="the genai builder's int4 model.onnx")
    parser.add_argument("--past", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=8)
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"CPU: {cpu['cpu']} ({cpu['logical_cores']} logical cores), flags: "
          f"{' '.join(cpu['flags'])}; ONNX Runtime CPU, 1 thread, batch 1, past {args.past}")
    with tempfile.TemporaryDirectory(prefix="decode-cost.") as tmp:
        bare = without_corrections(onnx.load(str(args.model)))
        onnx.save(bare, f"{tmp}/no_corrections.onnx")
        onnx.save(with_4bit_head(bare), f"{tmp}/no_corrections_4bit_head.onnx")
        rows = [("as kept", args.model),
                ("without offset corrections (timing only)", Path(f"{tmp}/no_corrections.onnx")),
                ("... and a 4-bit lm_head (timing only)",
                 Path(f"{tmp}/no_corrections_4bit_head.onnx"))]
        if args.builder:
            rows.append(("genai builder int4", args.builder))
        seconds = time_interleaved([path for _, path in rows], args.past, args.rounds)
    for (name, _), step in zip(rows, seconds):
        print(f"{name:<44} {step * 1e3:7.2f} ms/token  {seconds[0] / step:5.2f}x as kept")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
