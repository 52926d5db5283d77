"""``edgepack bench --robustness``: attacks on each benchmarked model, as deployed.

The flags fill one :class:`edgepack.bench.robustness.RobustnessConfig`; the command then calls
:func:`edgepack.bench.robustness.evaluate_robustness` once per model. Without ``--source`` the torch
model is unknown, so only the noise control and the black-box Square Attack run; with
``--source module:function [--source-args JSON] [--weights W.safetensors]`` FGSM and PGD are
crafted on that torch model and run through each ONNX file (a transfer attack when the file
is, say, its int8 version).
"""

from __future__ import annotations

import json


def register(p) -> None:
    g = p.add_argument_group("robustness (needs --data with labels)")
    g.add_argument("--robustness", default=None, metavar="EPS[,EPS...]",
                   help="attack each model at these L-infinity budgets, in input standard "
                        "deviations, e.g. 0.05,0.1")
    g.add_argument("--attacks", default=None, metavar="NAME[,NAME...]",
                   help="noise, fgsm, pgd, square (default: all that can run)")
    g.add_argument("--robustness-samples", type=str, default=None, metavar="N",
                   help="evaluation rows attacked (default 256)")
    g.add_argument("--queries", type=str, default=None, metavar="N",
                   help="Square Attack: model calls per sample at most (default 200)")
    g.add_argument("--source", default=None, metavar="MODULE:FUNCTION",
                   help="the torch model the ONNX files came from: FGSM/PGD are crafted on it")
    g.add_argument("--source-args", default=None, metavar="JSON",
                   help="keyword arguments for --source, e.g. '{\"width\": 16}'")
    g.add_argument("--weights", default=None, help="weights for --source (.safetensors)")


def _positive_int(text: str | None, flag: str, default: int) -> int:
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{flag} {text!r} is not valid; expected a positive integer")
    return value


def config_from_args(args):
    """The RobustnessConfig the flags describe, or None without ``--robustness``.

    Every flag is checked here, before anything runs: a bad value is one line, exit 2.
    """
    from edgepack.bench.robustness import RobustnessConfig, parse_attacks, parse_epsilons

    extra = [f for f, v in (("--attacks", args.attacks), ("--source", args.source),
                            ("--queries", args.queries), ("--weights", args.weights),
                            ("--robustness-samples", args.robustness_samples),
                            ("--source-args", args.source_args)) if v is not None]
    if args.robustness is None:
        if extra:
            raise ValueError(f"{extra[0]} needs --robustness EPS[,EPS...]")
        return None
    if not args.data:
        raise ValueError("--robustness needs --data: an .npz with the model's input and "
                         "a 'labels' array")
    if (args.weights or args.source_args) and not args.source:
        raise ValueError("--weights and --source-args describe --source's torch model; "
                         "pass --source module:function")
    defaults = RobustnessConfig()
    attacks = parse_attacks(args.attacks) if args.attacks else defaults.attacks
    return RobustnessConfig(eps=parse_epsilons(args.robustness), attacks=attacks,
                            samples=_positive_int(args.robustness_samples,
                                                  "--robustness-samples", defaults.samples),
                            query_budget=_positive_int(args.queries, "--queries",
                                                       defaults.query_budget))


def source_model(args):
    """The torch model of ``--source`` (with its weights), or None."""
    if not args.source:
        return None
    from edgepack.pipeline.teacher import build_model
    from edgepack.export.weights import load_weights

    try:
        kwargs = json.loads(args.source_args) if args.source_args else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"--source-args is not valid JSON ({exc.msg}); expected e.g. "
                         "'{\"width\": 16}'") from exc
    if not isinstance(kwargs, dict):
        raise ValueError("--source-args must be a JSON object, e.g. '{\"width\": 16}'")
    model = build_model(args.source, kwargs, None)
    if args.weights:
        load_weights(model, args.weights)
    return model.eval()


def evaluate_models(models, data_path, config, source) -> list[dict]:
    """One robustness result per model, on the inputs and labels of ``data_path``."""
    from edgepack.bench.inputs import check_feeds, load_npz
    from edgepack.bench.robustness import evaluate_robustness, robustness_session

    arrays = load_npz(data_path)
    results = []
    for path in models:
        session = robustness_session(path)
        feeds = check_feeds(session, arrays, str(data_path))
        inputs = next(iter(feeds.values())) if len(feeds) == 1 else None
        results.append(evaluate_robustness(session, inputs, arrays.get("labels"), config,
                                           source=source, crafted_on="--source"))
    return results
