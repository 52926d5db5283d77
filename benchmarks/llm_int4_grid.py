"""int4 (RTN, HQQ, GPTQ) and int8 on a decoder LLM: size, quality against fp32, decode speed.

For each configuration (algorithm x block size x symmetric, with and without the tied
embedding / lm_head in int4), the model is quantized once and judged at accuracy levels 4
and 0 (the level is a node attribute): file size, perplexity ratio to fp32 and teacher-forced
top-1 agreement on held-out token windows, greedy agreement over fixed prompts. Then every
variant and the fp32 model are timed interleaved in one run (decode tokens/s at batch 1).

Text: the eval split of ``edgepack.zoo.text_corpus.english_corpus`` (never trained on),
tokenized with the tokenizer.json beside the model; GPTQ calibrates on windows of the train
split. Nothing here is gated: every row is printed, and the JSON has every figure.

    python benchmarks/llm_int4_grid.py /tmp/llm/onnx/model.onnx [--windows 16] [--length 128]
        [--rounds 3] [--new-tokens 32] [--quality-threads 2] [--no-gptq] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import onnx  # noqa: E402

from edgepack.bench.decoder import Decoder  # noqa: E402
from edgepack.bench.envinfo import cpu_info  # noqa: E402
from edgepack.bench.generation import measure_generation  # noqa: E402
from edgepack.bench.lm_quality import lm_quality, lm_reference, token_windows  # noqa: E402
from edgepack.bench.session import SessionOptions  # noqa: E402
from edgepack.compress.quantize.decoder_candidates import int4, int8_dynamic  # noqa: E402
from edgepack.compress.quantize.methods import quantize_into  # noqa: E402
from edgepack.compress.quantize.methods._weight_only import (decoder_feeds,  # noqa: E402
                                                    set_accuracy_level)
from edgepack.core.onnx_files import model_size_bytes  # noqa: E402


def configurations(gptq: bool) -> list:
    """(name, candidate at accuracy level 0) of every quantization measured."""
    def name(algorithm, block, symmetric, embedding=True, bits=4):
        return (f"{algorithm}{'' if bits == 4 else ' 8-bit'} b{block} "
                f"{'sym' if symmetric else 'asym'}{'' if embedding else ' emb-fp32'}")

    grid = [("rtn", b, s, e) for b in (32, 128) for s in (True, False) for e in (True, False)
            if e or b == 32]
    grid += [("hqq", 32, False, True), ("hqq", 32, False, False), ("hqq", 128, False, True)]
    if gptq:   # one row: ONNX Runtime 1.32's GPTQ ignores its calibration (see the tests)
        grid += [("gptq", 32, True, True)]
    out = [(name(*row), int4(*row[:3], 0, row[3])) for row in grid]
    out += [(name("rtn", b, False, bits=8), int4("rtn", b, False, 0, bits=8)) for b in (32, 128)]
    return out + [("int8 dynamic", int8_dynamic())]


def corpus_ids(tokenizer_path: Path, split: str) -> list[int]:
    from tokenizers import Tokenizer

    from edgepack.zoo.text_corpus import english_corpus

    tokenizer = Tokenizer.from_file(str(tokenizer_path))
    return tokenizer.encode(" ".join(english_corpus()[split])).ids


def with_level(base: Path, level: int) -> Path:
    model = onnx.load(str(base))
    set_accuracy_level(model, level)
    path = base.with_name(f"{base.stem}-acc{level}.onnx")
    onnx.save(model, str(path))
    return path


def run_stage(args, windows, prompts) -> int:
    """The decoder quantize stage as a user gets it: default candidates, default gate."""
    from edgepack.compress.quantize.decoder_quantize import quantize_decoder
    from edgepack.compress.quantize.quantize_config import QuantizationCheckError

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="llm-stage.") as tmp:
        try:
            record = quantize_decoder(args.model, Path(tmp) / "model.onnx",
                                      eval_windows=windows, prompts=prompts,
                                      rounds=args.rounds).record
        except QuantizationCheckError as exc:
            record = {**exc.figures, "refused": str(exc)}
    print(f"stage wall time: {time.perf_counter() - start:.0f} s")
    for entry in record["candidates"]:
        speed = f", {entry['speedup']:.2f}x" if "speedup" in entry else ""
        figures = (f"ppl ratio {entry['perplexity_ratio']:.4f}, top-1 "
                   f"{entry['top1_agreement']:.4f}, greedy {entry['greedy_agreement']:.3f} on "
                   f"{entry['judged_windows']} windows" if "perplexity_ratio" in entry else "")
        print(f"  {entry['label']}: {figures}{speed}: {entry['verdict']}")
    print(f"chosen: {record.get('chosen', '-')}; {record.get('refused', '')}")
    if args.json:
        args.json.write_text(json.dumps(record, indent=1, default=str))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--windows", type=int, default=16)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--calibration-windows", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--quality-threads", type=int, default=2,
                        help="threads for the quality figures (timing always uses 1)")
    parser.add_argument("--no-gptq", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--stage", action="store_true",
                        help="run quantize_decoder with its default candidates instead "
                             "(the stage's own cost and choice, 1 thread throughout)")
    args = parser.parse_args()

    cpu = cpu_info()
    print(f"CPU: {cpu['cpu']} ({cpu['arch']}, {cpu['logical_cores']} logical cores), "
          f"flags: {' '.join(cpu['flags'])}")
    print(f"timing: 1 thread, batch 1, {args.rounds} interleaved rounds of a "
          f"{args.length // 4}-token prompt + {args.new_tokens} decode steps (1 warm-up run "
          f"each); quality: {args.windows} windows x {args.length} tokens, {args.prompts} "
          f"prompts x {args.new_tokens} greedy tokens, "
          f"{1 if args.stage else args.quality_threads} thread(s)")
    ids = corpus_ids(args.model.parent / "tokenizer.json", "evaluation")
    held = token_windows(ids, args.length, args.windows + args.prompts)
    windows, prompts = held[:args.windows], [w[:args.length // 4] for w in held[args.windows:]]
    calibration = token_windows(corpus_ids(args.model.parent / "tokenizer.json", "train"),
                                args.length, args.calibration_windows)
    if args.stage:
        return run_stage(args, windows, prompts)
    quality_options = SessionOptions(threads=args.quality_threads)
    reference = lm_reference(Decoder(args.model, quality_options), windows, prompts,
                             args.new_tokens)
    print(f"fp32: perplexity {reference.perplexity:.3f}, "
          f"{model_size_bytes(args.model) / 1e6:.1f} MB", flush=True)
    feeds = decoder_feeds(onnx.load(str(args.model), load_external_data=False), calibration)
    rows, paths = [], []
    with tempfile.TemporaryDirectory(prefix="llm-int4-grid.") as tmp:
        for index, (name, candidate) in enumerate(configurations(not args.no_gptq)):
            base = Path(tmp) / f"c{index}.onnx"
            start = time.perf_counter()
            gptq = getattr(candidate.settings, "algorithm", "") == "gptq"
            quantize_into(args.model, base, candidate.method, candidate.settings,
                          feeds=feeds if gptq else ())
            seconds = time.perf_counter() - start
            levels = (4, 0) if candidate.method == "int4" else (None,)
            for level in levels:
                path = base if level is None else with_level(base, level)
                quality = lm_quality(Decoder(path, quality_options), windows, prompts,
                                     reference, args.new_tokens)
                label = name + ("" if level is None else f" acc{level}")
                rows.append({"config": label, "quantize_s": round(seconds, 1),
                             "size_bytes": model_size_bytes(path), **quality.to_dict()})
                paths.append(path)
                print(f"  {label}: quantized in {seconds:.1f}s, "
                      f"{rows[-1]['size_bytes'] / 1e6:.1f} MB, ppl ratio "
                      f"{quality.perplexity_ratio:.4f}, top-1 {quality.top1_agreement:.4f}, "
                      f"greedy {quality.greedy_agreement:.3f}", flush=True)
        timing = SessionOptions(threads=1)
        decoders = [Decoder(args.model, timing)] + [Decoder(p, timing) for p in paths]
        stats = measure_generation(decoders, prompts[0], new_tokens=args.new_tokens,
                                   rounds=args.rounds)
    base = stats[0].decode_tokens_per_s
    print(f"\nfp32: {base:.1f} decode tokens/s, prefill p50 {stats[0].prefill_ms['p50']:.1f} "
          f"ms, {model_size_bytes(args.model) / 1e6:.1f} MB, perplexity "
          f"{reference.perplexity:.3f}\n")
    print("| config | size MB | ppl ratio | top-1 agr. | greedy agr. | decode tok/s | vs fp32 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row, figures in zip(rows, stats[1:]):
        row.update(decode_tokens_per_s=figures.decode_tokens_per_s,
                   speedup=figures.decode_tokens_per_s / base)
        print(f"| {row['config']} | {row['size_bytes'] / 1e6:.1f} | "
              f"{row['perplexity_ratio']:.4f} | {row['top1_agreement']:.4f} | "
              f"{row['greedy_agreement']:.3f} | {row['decode_tokens_per_s']:.1f} | "
              f"{row['speedup']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu, "fp32": {
            "perplexity": reference.perplexity, "decode_tokens_per_s": base,
            "size_bytes": model_size_bytes(args.model)}, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
