"""One robustness evaluation of an ONNX model: clean, noise, transfer and black-box accuracy.

Everything is measured on the artifact itself, through ONNX Runtime, on the first
``samples`` evaluation inputs (a fixed sample: every stage of a run sees the same inputs).
White-box examples (FGSM, PGD) are crafted on a torch model, ``source``: for a torch stage
that is the stage's own model (a white-box attack); for an ONNX-only stage, the model it was
exported from (a *transfer* attack, as an attacker holding the fp32 weights would run it
against the int8 file). The black-box Square Attack needs no source.

The result is a plain dict (the report's ``robustness`` entry)::

    {"applicable": true, "samples": 256, "scale": 1.02, "clean": 0.93,
     "noise": {"0.1": 0.92}, "fgsm": {"0.1": 0.41}, "pgd": {"0.1": 0.22},
     "square": {"0.1": 0.35}, "queries": {"0.1": {"mean": 61.2, "median": 38, ...}},
     "crafted_on": "the model itself", "skipped": {}, "seconds": 1.9, "cpu_seconds": 1.8}

or ``{"applicable": false, "reason": "..."}`` for a model these attacks do not fit.
"""

from __future__ import annotations

import time

import numpy as np

from edgepack.bench.robustness.attack_config import RobustnessConfig
from edgepack.bench.robustness.attacks import ATTACKS, AttackInputs
from edgepack.bench.robustness.predictions import ort_predict

FLOAT_TYPES = ("tensor(float)", "tensor(float16)")


def not_applicable_reason(session, labels) -> str:
    """Why these attacks do not fit this model, or "" when they do."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        return (f"the model has {len(inputs)} inputs ({names}); L-infinity attacks here "
                "perturb one float input (for text, word-substitution attacks fit instead)")
    declared = inputs[0]
    if declared.type not in FLOAT_TYPES:
        return (f"input {declared.name!r} is {declared.type} (token ids or other discrete "
                "values): an L-infinity perturbation of it has no meaning")
    if len(declared.shape) < 2:
        return f"input {declared.name!r} has rank {len(declared.shape)}; expected a batch axis"
    if labels is None:
        return "the evaluation data has no 'labels'; accuracy under attack needs class labels"
    return ""


def evaluate_robustness(session, inputs: np.ndarray, labels: np.ndarray | None,
                        config: RobustnessConfig, source=None,
                        crafted_on: str = "the model itself", crafted: dict | None = None) -> dict:
    """Accuracy of the model behind ``session`` under every attack and epsilon in ``config``.

    ``source``: the torch model white-box examples are crafted on (None: FGSM/PGD are
    skipped, with the reason in ``skipped``). ``crafted``: FGSM/PGD examples already made
    on ``source`` from these inputs with this config, by ``(attack, eps)``, filled as they
    are made: an fp32 file and its int8 copy share their parent's examples.
    """
    crafted = {} if crafted is None else crafted
    reason = not_applicable_reason(session, labels)
    if reason:
        return {"applicable": False, "reason": reason}
    if not config.enabled:
        return {}
    started, cpu_started = time.perf_counter(), time.process_time()
    x = np.ascontiguousarray(inputs[:config.samples], dtype=np.float32)
    y = np.asarray(labels[:config.samples]).astype(np.int64)
    if len(x) == 0:
        raise ValueError("robustness: the evaluation data has no rows")
    predict = ort_predict(session)
    scale = float(x.std()) or 1.0
    clean_correct = predict(x).argmax(-1) == y
    out: dict = {"applicable": True, "samples": int(len(x)), "scale": scale,
                 "clean": float(clean_correct.mean()), "skipped": {}}
    if source is not None:
        out["crafted_on"] = crafted_on
    given = AttackInputs(predict, x, y, config, clean_correct, source, crafted)
    for attack in config.attacks:
        spec = ATTACKS.get(attack, "robustness")
        if spec.needs_source and source is None:
            out["skipped"][attack] = "no torch model to take gradients from"
            continue
        out[attack] = {}
        for eps in config.eps:
            result = spec.attack(given, eps, eps * scale)
            out[attack][str(eps)] = result["accuracy"]
            if "queries" in result:
                out.setdefault("queries", {})[str(eps)] = result["queries"]
    out["seconds"] = time.perf_counter() - started
    out["cpu_seconds"] = time.process_time() - cpu_started   # all threads; what a busy machine pays
    return out


def robustness_session(path, threads: int = 1):
    """A CPU session for attacks (one thread by default: attacks run many small batches)."""
    from edgepack.bench.session import SessionOptions, make_session

    return make_session(path, SessionOptions(provider="cpu", threads=threads,
                                             inter_op_threads=1))
