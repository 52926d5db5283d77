"""How much the bench harness adds to what it measures (target: <= 3 % on p50).

For a tiny model (one MatMul+Add, microseconds) and a mid-size one (an MLP of 4 x 512x512,
a fraction of a millisecond) this script times, on ONE session per model, alternating blocks:

- bare:    the plainest loop, ``t0 = perf_counter_ns(); session.run(None, feeds); t1 = ...``
- harness: ``edgepack.bench.latency.RunTimer.time_block``, the loop :func:`bench.bench` times with

and prints p50 of each and their ratio, plus the whole-loop mean (one clock read per block,
no per-call timing at all) against the harness mean. Then :func:`bench.bench` runs both
models end to end (own sessions, interleaved) and its p50 is set beside the bare p50.

Run: ``python benchmarks/bench_overhead.py [--seconds 20]`` (about a minute).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgepack.bench import BenchConfig, bench  # noqa: E402
from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.inputs import generate_inputs  # noqa: E402
from edgepack.bench.latency import RunTimer, warm_up  # noqa: E402
from edgepack.bench.session import SessionOptions, make_session  # noqa: E402

BLOCK = 200


def mlp(path: Path, width: int, layers: int) -> Path:
    """x -> (MatMul, Add, Relu) x layers, float32, symbolic batch."""
    rng = np.random.default_rng(0)
    nodes, inits, current = [], [], "x"
    for i in range(layers):
        inits += [numpy_helper.from_array(
            (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32), f"W{i}"),
                  numpy_helper.from_array(np.zeros(width, np.float32), f"B{i}")]
        nodes += [helper.make_node("MatMul", [current, f"W{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"B{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"h{i}"])]
        current = f"h{i}"
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", width])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, ["N", width])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def bare_block(session, feeds, runs: int, samples: list[int]) -> int:
    """The plainest per-call timing loop; returns the whole block's time (ns)."""
    clock = time.perf_counter_ns
    start = clock()
    for _ in range(runs):
        t0 = clock()
        session.run(None, feeds)
        samples.append(clock() - t0)
    return clock() - start


def compare_on_one_session(path: Path, seconds: float) -> dict:
    """Alternate bare and harness blocks on the same session for about ``seconds``."""
    session = make_session(path, SessionOptions(threads=1))
    feeds = generate_inputs(session, batch=1)
    run = session.run
    timer = RunTimer(lambda: run(None, feeds), max_runs=10**9)
    warm_up(timer.run, 50)
    bare: list[int] = []
    bare_total = harness_total = 0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        bare_total += bare_block(session, feeds, BLOCK, bare)
        t0 = time.perf_counter_ns()
        timer.time_block(BLOCK)
        harness_total += time.perf_counter_ns() - t0
    runs = len(bare)
    return {"runs": runs, "bare_p50": np.median(bare) / 1e6,
            "harness_p50": np.median(timer.samples_ns) / 1e6,
            "bare_loop_mean": bare_total / runs / 1e6,
            "harness_loop_mean": harness_total / runs / 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per model, same session")
    args = parser.parse_args()
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores)")
    print(f"settings: CPUExecutionProvider, 1 intra-op thread, batch 1, blocks of {BLOCK} runs, "
          f"bare and harness alternating on one session for {args.seconds:.0f} s per model")
    with tempfile.TemporaryDirectory() as tmp:
        models = {"tiny (MatMul+Add 16x10)": mlp(Path(tmp) / "tiny.onnx", 16, 1),
                  "mid (MLP 4 x 512x512)": mlp(Path(tmp) / "mid.onnx", 512, 4)}
        rows = {name: compare_on_one_session(path, args.seconds) for name, path in models.items()}
        config = BenchConfig(threads=1, min_runs=2000, min_time_s=args.seconds / 2)
        api = bench(list(models.values()), config)
    print(f"\n{'model':26} {'runs':>8} {'bare p50 ms':>12} {'harness p50':>12} {'overhead':>9}"
          f" {'bare mean':>10} {'harn. mean':>10} {'overhead':>9}")
    for name, r in rows.items():
        print(f"{name:26} {r['runs']:>8} {r['bare_p50']:>12.5f} {r['harness_p50']:>12.5f} "
              f"{r['harness_p50'] / r['bare_p50'] - 1:>+9.2%} {r['bare_loop_mean']:>10.5f} "
              f"{r['harness_loop_mean']:>10.5f} "
              f"{r['harness_loop_mean'] / r['bare_loop_mean'] - 1:>+9.2%}")
    print("\nbench.bench() end to end (own sessions, the two models interleaved):")
    for (name, r), result in zip(rows.items(), api):
        lat = result["latency_ms"]
        print(f"{name:26} runs {lat['runs']:>7}  p50 {lat['p50']:.5f} ms  spread "
              f"{lat['spread']:.1%}  vs bare p50 above: {lat['p50'] / r['bare_p50'] - 1:+.2%}")
    print("\ntarget: harness p50 overhead <= 3 %")


if __name__ == "__main__":
    main()
