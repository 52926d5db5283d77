"""``edgepack generate``: greedy text from a decoder LLM, streamed token by token.

Plain ONNX Runtime through :class:`bench.decoder.Decoder` (no onnxruntime-genai needed), so
what it prints is what the benchmarked model computes. Only the continuation is printed, so
the output can be piped; it stops at the model's eos token or after ``--max-new-tokens``.
"""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("generate", help="stream greedy text from a decoder LLM (ONNX, KV cache)")
    p.add_argument("model", help="decoder .onnx with past_key_values inputs (Optimum export)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="folder holding tokenizer.json (default: the model's own folder)")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help="stop after this many tokens if no eos came (default 64)")
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="intra-op threads; 0 lets ONNX Runtime choose (default 1)")
    p.set_defaults(handler=handle)


def tokenizer_folder(model: str, tokenizer: str | None):
    """``--tokenizer`` when given; else the model's folder, when it holds tokenizer.json."""
    from pathlib import Path

    if tokenizer:
        return Path(tokenizer)
    folder = Path(model).parent
    if not (folder / "tokenizer.json").is_file():
        raise ValueError(f"no tokenizer.json beside {model}; give --tokenizer DIR, the folder "
                         f"holding the model's tokenizer.json")
    return folder


def prompt_ids(tokenizer, prompt: str, context: int | None) -> list[int]:
    """The prompt's token ids; an empty prompt, or one filling the whole context, is refused."""
    if not prompt.strip():
        raise ValueError("--prompt is empty; give the text to continue")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError(f"--prompt {prompt!r} encodes to no tokens with the tokenizer in "
                         f"{tokenizer.folder}")
    if context is not None and len(ids) >= context:
        raise ValueError(f"--prompt is {len(ids)} tokens; the model's context is {context} "
                         f"tokens (max_position_embeddings), so nothing is left to generate")
    return ids


def handle(args) -> int:
    import sys

    from bench.decoder import Decoder, context_length
    from bench.session import SessionOptions
    from bench.tokenizer import TextStream, check_vocabulary, load_tokenizer

    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {args.max_new_tokens}")
    tokenizer = load_tokenizer(tokenizer_folder(args.model, args.tokenizer))
    context = context_length(args.model)
    ids = prompt_ids(tokenizer, args.prompt, context)
    decoder = Decoder(args.model, SessionOptions(threads=args.threads))
    check_vocabulary(tokenizer, decoder.vocab_size, args.model)
    budget = args.max_new_tokens
    if context is not None and len(ids) + budget > context:
        budget = context - len(ids)
        print(f"edgepack: note: the context of {context} tokens leaves room for {budget} new "
              f"tokens after the {len(ids)}-token prompt", file=sys.stderr)
    stream = TextStream(tokenizer, ids)
    for token in decoder.greedy(ids, budget, eos_ids=tokenizer.eos_ids):
        sys.stdout.write(stream.add(token))
        sys.stdout.flush()
    sys.stdout.write(stream.finish() + "\n")
    sys.stdout.flush()
    return 0
