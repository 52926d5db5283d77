"""``edgepack generate``: greedy text from a decoder LLM, streamed token by token.

Plain ONNX Runtime through :class:`edgepack.bench.decoder.Decoder` (no onnxruntime-genai needed), so
what it prints is what the benchmarked model computes. Only the continuation is printed, so
the output can be piped; it stops at the model's eos token or after ``--max-new-tokens``.
"""

from __future__ import annotations

from edgepack.core.checks import MAX_TOKENS


def register(sub) -> None:
    p = sub.add_parser("generate", help="stream greedy text from a decoder LLM (ONNX, KV cache)")
    p.add_argument("model", help="decoder .onnx with past_key_values inputs (Optimum export)")
    p.add_argument("--tokenizer", default=None, metavar="DIR",
                   help="folder holding tokenizer.json (default: the model's own folder)")
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument("--max-new-tokens", type=int, default=64, metavar="N",
                   help=f"stop after this many tokens if no eos came: 1 to {MAX_TOKENS:,}, "
                        "and no more than the model's context and this machine's memory "
                        "hold (default 64)")
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


def check_utf8(prompt: str) -> None:
    """Refuse a prompt that is not UTF-8 text: the bytes Python could not decode from the
    command line arrive as lone surrogates, which no tokenizer can encode."""
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as exc:
        byte = ord(prompt[exc.start]) - 0xDC00 if "\udc80" <= prompt[exc.start] <= "\udcff" \
            else None
        shown = f"byte 0x{byte:02x}" if byte is not None else f"{prompt[exc.start]!r}"
        raise ValueError(f"--prompt is not UTF-8 text ({shown} at character {exc.start}); "
                         f"give the text in UTF-8") from None


def prompt_ids(tokenizer, prompt: str, context: int | None) -> list[int]:
    """The prompt's token ids; an empty prompt, one that is not UTF-8, or one filling the
    whole context, is refused."""
    if not prompt.strip():
        raise ValueError("--prompt is empty; give the text to continue")
    check_utf8(prompt)
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError(f"--prompt {prompt!r} encodes to no tokens with the tokenizer in "
                         f"{tokenizer.folder}")
    if context is not None and len(ids) >= context:
        raise ValueError(f"--prompt is {len(ids)} tokens; the model's context is {context} "
                         f"tokens (its config.json), so nothing is left to generate")
    return ids


def check_max_new_tokens(value: int) -> None:
    """``--max-new-tokens`` within its stated bound, before anything is loaded."""
    if value < 1:
        raise ValueError(f"--max-new-tokens must be >= 1, got {value}")
    if value > MAX_TOKENS:
        raise ValueError(f"--max-new-tokens {value:,} is beyond the bound of {MAX_TOKENS:,} "
                         f"tokens (a 128k context); lower it")


def handle(args) -> int:
    import sys

    from edgepack.bench.decoder import Decoder, context_length
    from edgepack.bench.decoder_memory import check_generation_fits
    from edgepack.bench.session import SessionOptions
    from edgepack.bench.tokenizer import TextStream, check_vocabulary, load_tokenizer

    check_max_new_tokens(args.max_new_tokens)
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
    check_generation_fits(decoder, len(ids), budget,
                          remedy="give a shorter --prompt or a lower --max-new-tokens")
    stream = TextStream(tokenizer, ids)
    for token in decoder.greedy(ids, budget, eos_ids=tokenizer.eos_ids, check_logits=True):
        sys.stdout.write(stream.add(token))
        sys.stdout.flush()
    sys.stdout.write(stream.finish() + "\n")
    sys.stdout.flush()
    return 0
