"""``edgepack export``: a torch model (module:function + weights), a local Hugging Face
model folder or a GGUF file -> verified ONNX, optionally with an offline-optimized copy."""

import sys


def register(sub) -> None:
    from edgepack.cli.run_cmd import add_code_trust_flags

    p = sub.add_parser("export", help="export a torch or Hugging Face model to ONNX, with "
                                      "a parity check")
    source = p.add_argument_group("source (one of)")
    source.add_argument("--model", default=None, help="torch builder, as module:function")
    source.add_argument("--hf", default=None, metavar="LOCAL_DIR",
                        help="a local transformers model folder (never downloaded)")
    source.add_argument("--gguf", default=None, metavar="FILE.gguf",
                        help="a GGUF file (llama.cpp's format): de-quantized to fp32 (cached) "
                             "and exported as a decoder with its KV cache")
    p.add_argument("--task", default=None,
                   help="with --hf: feature-extraction | text-classification (alias "
                        "sequence-classification) | text-generation-with-past (a decoder LLM "
                        "with its KV cache)")
    from edgepack.export.decoder_graphs import AUTO, graph_choices

    p.add_argument("--graph", default=AUTO, choices=graph_choices(),
                   help="a decoder's graph: fused (GroupQueryAttention, packed QKV: faster) | "
                        "traced (optimum's trace: every architecture) | auto (default: fused "
                        "where it was tested for the model type, else traced)")
    p.add_argument("--args", default="{}", help="builder arguments as JSON, e.g. '{\"width\": 16}'")
    p.add_argument("--weights", default="", help=".safetensors (or a torch zip checkpoint)")
    p.add_argument("--input-shape", default=None, help="with --model: example input shape, "
                                                       "e.g. 1,1,40")
    from edgepack.cli.config_flags import add_config_flags
    from edgepack.export.torch_export import ExportConfig

    add_config_flags(p, ExportConfig)
    p.add_argument("--dynamic-axes", default="",
                   help="extra input axes whose size varies, e.g. 1 for a sequence length")
    p.add_argument("--input-names", default=None, help="comma-separated input names")
    p.add_argument("--output-names", default=None, help="comma-separated output names")
    p.add_argument("--optimize", default=None, metavar="LEVEL",
                   help="also save ONNX Runtime's basic | extended | all optimization as "
                        "<name>.opt.onnx, parity-checked again")
    add_code_trust_flags(p)
    p.add_argument("-o", "--output", required=True,
                   help="output .onnx path (--model) or output folder (--hf, --gguf)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing output file that edgepack did not write")
    p.set_defaults(handler=handle)


def parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(d) for d in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"--input-shape {text!r} is not valid; expected positive integers "
                         "separated by commas, e.g. 1,1,40")
    return shape


def parse_axes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(a) for a in text.split(",") if a.strip())
    except ValueError:
        raise ValueError(f"--dynamic-axes {text!r} is not valid; expected axis numbers "
                         "separated by commas, e.g. 1") from None


def parse_names(flag: str, text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise ValueError(f"{flag} {text!r} is empty; expected comma-separated names")
    return names


def check_source(args) -> None:
    """Exactly one of --model / --hf / --gguf, with the flags that go with it."""
    if sum(bool(x) for x in (args.model, args.hf, args.gguf)) != 1:
        raise ValueError("give exactly one of --model module:function, --hf LOCAL_DIR or "
                         "--gguf FILE.gguf")
    if args.gguf and args.task not in (None, "text-generation-with-past"):
        raise ValueError(f"--gguf exports a decoder (task text-generation-with-past), not "
                         f"{args.task!r}")
    if args.model and not args.input_shape:
        raise ValueError("--model needs --input-shape, e.g. --input-shape 1,1,40")
    if args.hf and not args.task:
        raise ValueError("--hf needs --task feature-extraction, text-classification or "
                         "text-generation-with-past")
    if args.model and args.task:
        raise ValueError("--task goes with --hf, not with --model")
    from edgepack.export.decoder_graphs import AUTO

    if args.model and args.graph != AUTO:
        raise ValueError("--graph goes with a decoder (--hf ... --task text-generation-with-past "
                         "or --gguf), not with --model")


def print_parity(parity: dict, what: str) -> None:
    print("\n".join(parity["lines"]))
    if not parity["ok"]:
        rule = parity.get("rule")
        bound = (f"{rule['multiple']:g}x torch's float32 error against float64" if rule else
                 f"atol={parity['atol']}, rtol={parity['rtol']}")
        print(f"edgepack: WARNING: {what} parity beyond tolerance ({bound})", file=sys.stderr)


def check_example_fits(model, shape: tuple[int, ...]) -> None:
    """The example input and the held-out parity inputs (8 rows) must fit in memory."""
    import math

    from edgepack.core.memory_budget import check_fits

    weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
    rows = math.prod(shape[1:])
    check_fits(f"exporting with --input-shape {','.join(map(str, shape))}", weights,
               4 * (math.prod(shape) + 8 * rows), remedy="give a smaller --input-shape (the "
               "batch axis stays dynamic: 1 is enough)")


def export_torch(args):
    import json
    from pathlib import Path

    import torch

    from edgepack.pipeline.teacher import build_model
    from edgepack.cli.config_flags import config_kwargs
    from edgepack.export.torch_export import ExportConfig, export_onnx
    from edgepack.export.weights import load_weights

    shape = parse_shape(args.input_shape)
    try:
        builder_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--args is not valid JSON: {exc}") from exc
    settings = config_kwargs(args, ExportConfig)
    settings["dynamic_axes"] = parse_axes(args.dynamic_axes)
    for flag, name in (("--input-names", "input_names"), ("--output-names", "output_names")):
        if getattr(args, name) is not None:
            settings[name] = parse_names(flag, getattr(args, name))
    config = ExportConfig(**settings)
    model = build_model(args.model, builder_args, Path.cwd())
    if args.weights:
        load_weights(model, args.weights, trust_pickle=args.trust_pickle)
    check_example_fits(model, shape)
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(shape, generator=generator)
    held_out = torch.randn((8, *shape[1:]), generator=generator)
    return export_onnx(model, config, example, args.output, parity_inputs=held_out)


def export_hugging_face(args):
    from edgepack.cli.config_flags import config_kwargs
    from edgepack.export.hf import export_hf
    from edgepack.export.torch_export import ExportConfig

    settings = config_kwargs(args, ExportConfig)
    unused = sorted(set(settings) - {"opset", "parity_multiple", "fail_on_mismatch"})
    unused += [flag for flag, value in (("input-names", args.input_names),
                                        ("output-names", args.output_names),
                                        ("dynamic-axes", args.dynamic_axes)) if value]
    if unused:
        listed = ", ".join("--" + name.replace("_", "-") for name in unused)
        raise ValueError(f"--hf exports with optimum's input names and axes; drop {listed}")
    return export_hf(args.hf, args.task, args.output, graph=args.graph, **settings)


def export_gguf(args):
    """The GGUF converted to an fp32 Hugging Face folder (cached), exported as a decoder."""
    from edgepack.pipeline.teacher import cache_dir
    from edgepack.export.gguf import cached_hf_folder
    from edgepack.export.hf import DECODER_TASK

    args.hf, args.task = str(cached_hf_folder(args.gguf, cache_dir() / "models")), DECODER_TASK
    return export_hugging_face(args)


def check_outputs(args) -> None:
    """-o (and the optimized copy beside it) must be new files or edgepack's own."""

    from edgepack.core.output_paths import check_onnx_output

    if args.hf or args.gguf:
        return  # a folder: export_hf admits only an empty one or an earlier export
    inputs = [args.weights]
    out = check_onnx_output(args.output, inputs=inputs, flag="-o/--output",
                            overwrite=args.overwrite)
    if args.optimize is not None:
        check_onnx_output(out.with_suffix(".opt.onnx"), inputs=inputs,
                          flag="--optimize output", overwrite=args.overwrite)


def handle(args) -> int:
    from edgepack.export.optimize import LEVELS
    from edgepack.core.checks import check_choice

    from edgepack.cli.run_cmd import code_trust

    check_source(args)
    if args.optimize is not None:
        check_choice("--optimize", "level", args.optimize, LEVELS)
    check_outputs(args)
    with code_trust(args):
        result = export_gguf(args) if args.gguf else (
            export_hugging_face(args) if args.hf else export_torch(args))
    record = result.record
    print_parity(record["parity"], "export")
    graph = record.get("graph")
    built = f", {graph['name']} graph of {graph['nodes']:,} nodes" if graph else ""
    print(f"wrote {result.artifact} ({record['size_bytes']:,} bytes, "
          f"{record['params']:,} params{built})")
    if args.optimize is not None:
        from edgepack.export.optimize import optimize_onnx

        parity = {k: v for k, v in vars(args).items()
                  if k == "fail_on_mismatch" and v is not None}
        optimized = optimize_onnx(result.artifact, args.optimize,
                                  result.artifact.with_suffix(".opt.onnx"), **parity)
        print_parity(optimized.record["parity"], f"{args.optimize}-optimized")
        print(f"wrote {optimized.artifact} ({optimized.record['nodes_before']} -> "
              f"{optimized.record['nodes']} nodes)")
    return 0
