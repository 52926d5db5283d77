"""Wall time of `edgepack demo` with a cold cache (target: <= 120 s on a 2-core machine).

Runs the demo in a subprocess with an empty cache folder (so MNIST-1D is generated and the
teacher trained from scratch) and prints the wall time, the CPU time the demo used (user +
system, all its threads: on a shared machine the wall time also counts other people's work),
the machine, and the demo's table.

    python benchmarks/demo_wall_time.py
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 120.0


def main() -> int:
    from edgepack.bench.envinfo import cpu_info

    cpu = cpu_info()
    with tempfile.TemporaryDirectory(prefix="edgepack-demo-bench-") as tmp:
        env = {**os.environ, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        out = Path(tmp) / "run"
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "edgepack", "demo", "--out", str(out),
                               "--no-progress"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu_s = usage.ru_utime + usage.ru_stime
        if proc.returncode != 0:
            print(proc.stderr[-2000:], file=sys.stderr)
            return proc.returncode
        report = json.loads((out / "report.json").read_text())
    print(proc.stdout)
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores)")
    print(f"edgepack demo, cold cache: {wall:.1f} s wall (target <= {TARGET_S:.0f} s): "
          f"{'met' if wall <= TARGET_S else 'NOT met'}; CPU time {cpu_s:.1f} s (user + system)")
    print(f"stderr: {len(proc.stderr.splitlines())} lines, {len(proc.stderr):,} bytes, "
          f"{proc.stderr.count(chr(13))} carriage returns")
    print(f"teacher accuracy {report['teacher']['accuracy']:.4f}; final artifact "
          f"{report['final_artifact']}")
    print_breakdown(report, wall)
    return 0


def print_breakdown(report: dict, wall: float) -> None:
    """Where the wall time went: each stage's run and measurement (bench, attacks), the
    robustness section alone, and the rest (start-up, data, teacher training and its row)."""
    stages = report["stages"]
    rows = [(s["name"], (s.get("seconds") or {}).get("run", 0.0),
             (s.get("seconds") or {}).get("measure", 0.0)) for s in stages]
    attacks = sum(((r.get("robustness") or {}).get("seconds", 0.0)
                   + (r.get("attribution") or {}).get("seconds", 0.0))
                  for r in [report["teacher"], *stages])
    baseline = sum((s.get("record") or {}).get("alone_baseline", {}).get("seconds", 0.0)
                   for s in stages if isinstance(s.get("record"), dict))
    for name, run, measure in rows:
        print(f"  {name:12s} run {run:6.1f} s  measure {measure:5.1f} s")
    staged = sum(run + measure for _, run, measure in rows)
    print(f"  robustness section (all rows): {attacks:.1f} s; distillation's alone baseline: "
          f"{baseline:.1f} s; start-up, data, teacher training and the teacher's row: "
          f"{wall - staged:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
