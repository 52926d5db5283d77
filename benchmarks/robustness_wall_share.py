"""What the robustness section adds to the demo's time (target, issue 16: <= 15%).

Runs the demo's recipe twice per round in fresh subprocesses, interleaved: as shipped
(``[robustness]`` on) and with the section off (``samples = 0`` and ``attribution_samples
= 0``: no attacks, no attribution drift), and reports for each the wall time and the CPU
time (user + system of the child: on a shared machine the wall time also counts other
people's work), their medians and the section's share, ``on / off - 1``. The section's own
time, as the report records it (attacks plus attribution, summed over rows), is printed too.

``--cold`` gives every run an empty cache folder, so MNIST-1D is generated and the teacher
trained in each (the demo as a new user first runs it); by default the cache is warm (one
untimed run first fills it).

    python benchmarks/robustness_wall_share.py --rounds 2 [--cold]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.15


def child(mode: str, out: str) -> None:
    """One demo run, the robustness section on or off (runs in its own process)."""
    sys.path.insert(0, str(REPO))
    from edgepack.pipeline.recipe_runner import demo_recipe, run_recipe

    recipe = demo_recipe()
    if mode == "off":
        recipe.robustness = dataclasses.replace(recipe.robustness, samples=0,
                                                attribution_samples=0)
    run_recipe(recipe, out, progress=False)


def timed_run(mode: str, folder: Path, cold: bool) -> dict:
    """Wall and CPU seconds of one demo run in a subprocess, and the section's own time."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if cold:
        env["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="cache-", dir=folder)
    out = tempfile.mkdtemp(prefix=f"{mode}-", dir=folder) + "/run"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--child", mode, out], env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    report = json.loads((Path(out) / "report.json").read_text())
    rows = [report["teacher"], *report["stages"]]
    section = [sum((row.get(part) or {}).get(key, 0.0) for row in rows
                   for part in ("robustness", "attribution")) for key in ("seconds", "cpu_seconds")]
    return {"wall": wall, "cpu": cpu, "section_wall": section[0], "section_cpu": section[1]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="an empty cache for every run")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    sys.path.insert(0, str(REPO))
    from edgepack.bench.envinfo import cpu_info

    runs: dict[str, list[dict]] = {"on": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="edgepack-share-") as tmp:
        if not args.cold:
            timed_run("off", Path(tmp), cold=False)   # fills the cache; not counted
        for round_ in range(args.rounds):
            for mode in (("on", "off") if round_ % 2 == 0 else ("off", "on")):
                runs[mode].append(timed_run(mode, Path(tmp), args.cold))
                r = runs[mode][-1]
                print(f"round {round_ + 1} {mode:3s}: {r['wall']:6.1f} s wall, {r['cpu']:6.1f} s "
                      f"CPU; section {r['section_wall']:5.1f} s wall, {r['section_cpu']:5.1f} s "
                      "CPU", flush=True)
    cpu = cpu_info()
    print(f"\nmachine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores); "
          f"{'cold' if args.cold else 'warm'} cache; medians of {args.rounds} runs each")
    for key, label in (("wall", "wall"), ("cpu", "CPU")):
        on = statistics.median(r[key] for r in runs["on"])
        off = statistics.median(r[key] for r in runs["off"])
        share = on / off - 1
        print(f"  {label:4s}: on {on:6.1f} s, off {off:6.1f} s: the section adds "
              f"{100 * share:+.1f}%"
              f" (target <= {100 * TARGET:.0f}%: {'met' if share <= TARGET else 'NOT met'})")
    section = statistics.median(r["section_cpu"] for r in runs["on"])
    print(f"  the section's own CPU time in the reports: {section:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
