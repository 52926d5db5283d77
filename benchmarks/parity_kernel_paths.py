"""The export parity rule on SmolLM2-135M across this CPU's kernel paths, with a 1%-perturbed
layer as the control that must fail on each.

For each path it prints ONNX Runtime's worst error against the float64 torch run as a share
of the bound the rule derives (below 1: passes), torch's own float32 error, and the verdict
of the same check on the model with one layer's MLP weights perturbed by seeded noise of 1%
of their size. Paths:

- native: torch and ONNX Runtime as they choose on this CPU (AVX2, AVX-512 or AMX);
- torch lowered by its own switches (``edgepack.bench.kernel_paths.TORCH_PATHS``), ONNX Runtime native:
  each in a process of its own;
- ONNX Runtime on faked CPU flags under qemu-x86_64 (``--emulate``: SSE4.2 always, AVX2 where
  the native path is wider; minutes per case for a 135M model under emulation).

    edgepack run examples/smollm2.toml --out runs/smollm2      # or: edgepack export --gguf ...
    python benchmarks/parity_kernel_paths.py --onnx runs/smollm2/01-export-decoder/model/model.onnx \
        --emulate
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _perturbed(model, layer: int = 15, share: float = 0.01):
    """A copy with one layer's MLP output projection off by seeded noise of ``share``."""
    import copy

    import torch

    twin = copy.deepcopy(model)
    weight = twin.model.layers[layer].mlp.down_proj.weight
    with torch.no_grad():
        noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
        weight.add_(share * weight.abs() * noise)
    return twin


def _summary(parity: dict) -> dict:
    outputs = [o for o in parity["outputs"] if o["torch_error"] is not None]
    worst = parity["worst"]
    return {"ok": parity["ok"], "worst_share_of_bound": worst["error"] / worst["allowed"],
            "worst": f"{worst['name']} ({worst['label']})",
            "max_onnx_error": max(o["error"] for o in outputs),
            "max_torch_error": max(o["torch_error"] for o in outputs)}


def check_here(onnx_path: Path, run_onnx=None) -> dict:
    """The rule on the model and on its perturbed copy, in this process."""
    import torch
    from transformers import AutoModelForCausalLM

    from edgepack.zoo.smollm2 import smollm2_folder
    from edgepack.export.decoder_parity import check_decoder_parity

    model = AutoModelForCausalLM.from_pretrained(str(smollm2_folder())).eval()
    row = {"capability": torch.backends.cpu.get_cpu_capability(),
           **_summary(check_decoder_parity(model, onnx_path, run_onnx=run_onnx))}
    perturbed = check_decoder_parity(_perturbed(model), onnx_path, run_onnx=run_onnx)
    row["perturbed"] = _summary(perturbed)
    return row


def check_torch_path(onnx_path: Path, env: dict) -> dict:
    """:func:`check_here` in a child process with the torch switches ``env`` set."""
    done = subprocess.run([sys.executable, __file__, "--onnx", str(onnx_path), "--child"],
                          env={**os.environ, **env}, capture_output=True, text=True,
                          cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", required=True, help="SmolLM2's exported decoder")
    parser.add_argument("--emulate", action="store_true",
                        help="also ONNX Runtime on faked CPU flags under qemu-x86_64")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    onnx_path = Path(args.onnx)
    if args.child:
        print(json.dumps(check_here(onnx_path)))
        return
    from edgepack.bench.envinfo import cpu_info
    from edgepack.bench.kernel_paths import EMULATED_CPUS, TORCH_PATHS, cpu_flags, run_decoder_steps

    rows = {"native": check_here(onnx_path)}
    for name, env in TORCH_PATHS.items():
        rows[name + ", ONNX Runtime native"] = check_torch_path(onnx_path, env)
    wide = bool({"avx512f", "amx_tile"} & cpu_flags())
    for name, cpu in EMULATED_CPUS.items() if args.emulate else ():
        if "AVX2" in name and not wide:
            continue

        def runner(prompt, fed, cpu=cpu):
            return run_decoder_steps(onnx_path, prompt, fed, qemu_cpu=cpu)
        rows["ONNX Runtime " + name + ", torch native"] = check_here(onnx_path, runner)
    info = cpu_info()
    print(f"CPU: {info['cpu']}; flags: {' '.join(info['flags'])}; {info['logical_cores']} cores")
    print(f"{'path':58} {'torch':8} {'verdict':8} {'worst/bound':>11} {'ORT err':>9} "
          f"{'torch err':>9}  {'1% layer':>8} {'worst/bound':>11}")
    for name, row in rows.items():
        bad = row["perturbed"]
        print(f"{name:58} {row['capability']:8} {'pass' if row['ok'] else 'FAIL':8} "
              f"{row['worst_share_of_bound']:11.3f} {row['max_onnx_error']:9.1e} "
              f"{row['max_torch_error']:9.1e}  {'pass' if bad['ok'] else 'fails':>8} "
              f"{bad['worst_share_of_bound']:11.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cpu": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
