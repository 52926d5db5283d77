"""edgepack.bench.robustness: attacks against the noise control, the black-box budget, the int8
artifact, models the attacks do not fit, determinism, and the report table."""

import numpy as np
import pytest
import torch

from edgepack.bench.robustness import (RobustnessConfig, evaluate_robustness, parse_attacks,
                                       parse_epsilons, robustness_session)
from edgepack.bench.robustness.attacks.square import margins, square_attack
from edgepack.bench.robustness.predictions import ort_predict
from edgepack.bench.robustness.robustness_report import robustness_plot, robustness_table
from edgepack.bench.robustness.attacks import craft
from edgepack.bench.robustness.attacks.noise import sign_noise
from edgepack.bench.robustness.attacks.pgd import pgd
from tests.bench.conftest import token_model
from tests.bench.robust_models import (eval_arrays, export_tiny, quantize_tiny, trained_tiny)

CONFIG = RobustnessConfig(eps=(0.3,), samples=200, query_budget=60, pgd_steps=5)


@pytest.fixture(scope="module")
def fp32_path(tmp_path_factory):
    return export_tiny(trained_tiny(), tmp_path_factory.mktemp("robust") / "tiny.onnx")


def test_attacks_beat_the_noise_control_at_the_same_eps(fp32_path):
    x, y = eval_arrays()
    result = evaluate_robustness(robustness_session(fp32_path), x, y, CONFIG,
                                 source=trained_tiny())
    clean, noise = result["clean"], result["noise"]["0.3"]
    assert clean > 0.4, "the tiny model must have learned something to lose"
    assert noise > clean - 0.15          # random signs barely hurt
    for attack in ("fgsm", "pgd", "square"):
        assert result[attack]["0.3"] < noise - 0.2, (attack, result[attack], noise)
    assert result["pgd"]["0.3"] <= result["fgsm"]["0.3"] + 0.05   # PGD at least about as strong


def test_white_box_attacks_skipped_without_a_torch_model(fp32_path):
    x, y = eval_arrays(64)
    result = evaluate_robustness(robustness_session(fp32_path), x, y, CONFIG)
    assert set(result["skipped"]) == {"fgsm", "pgd"}
    assert "square" in result and "noise" in result and "fgsm" not in result


def test_black_box_respects_the_query_budget_on_an_int8_model(fp32_path, tmp_path):
    int8 = quantize_tiny(fp32_path, tmp_path / "tiny.int8.onnx")
    session = robustness_session(int8)
    x, y = eval_arrays(128)
    calls = {"rows": 0}
    predict_inner = ort_predict(session)

    def predict(batch):
        calls["rows"] += len(batch)
        return predict_inner(batch)

    budget = 25
    result = square_attack(predict, x, y, eps=0.3 * float(x.std()), query_budget=budget, seed=1)
    assert result["queries"].max() <= budget
    assert calls["rows"] == result["queries"].sum()   # every model call is counted
    clean = float((predict_inner(x).argmax(1) == y).mean())
    assert result["correct"].mean() < clean - 0.1
    # the adversarial inputs stay inside the eps-ball and are what the model misreads
    assert np.abs(result["adversarial"] - x).max() <= 0.3 * float(x.std()) + 1e-5
    fooled = ~result["correct"]
    assert (margins(predict_inner(result["adversarial"][fooled]), y[fooled]) <= 0).all()


def test_evaluation_reports_queries_and_is_deterministic(fp32_path):
    x, y = eval_arrays(64)
    first = evaluate_robustness(robustness_session(fp32_path), x, y, CONFIG, source=trained_tiny())
    second = evaluate_robustness(robustness_session(fp32_path), x, y, CONFIG, source=trained_tiny())
    queries = first["queries"]["0.3"]
    assert 1 <= queries["median"] <= queries["max"] <= CONFIG.query_budget
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "cpu_seconds")}
    assert strip(first) == strip(second)


def test_an_int8_copy_is_attacked_with_its_parents_examples(fp32_path, tmp_path, monkeypatch):
    import edgepack.bench.robustness.attacks as attacks

    int8 = quantize_tiny(fp32_path, tmp_path / "shared.int8.onnx")
    x, y = eval_arrays(64)
    config = RobustnessConfig(eps=(0.3,), samples=64, attacks=("fgsm", "pgd"), pgd_steps=3)
    alone = evaluate_robustness(robustness_session(int8), x, y, config, source=trained_tiny())
    made = []
    monkeypatch.setattr(attacks, "craft", lambda *a, **k: made.append(a[0]) or craft(*a, **k))
    crafted: dict = {}
    evaluate_robustness(robustness_session(fp32_path), x, y, config, source=trained_tiny(),
                        crafted=crafted)
    shared = evaluate_robustness(robustness_session(int8), x, y, config, source=trained_tiny(),
                                 crafted=crafted)
    assert made == ["fgsm", "pgd"]                  # crafted for the fp32 file only
    assert (shared["fgsm"], shared["pgd"]) == (alone["fgsm"], alone["pgd"])


def test_token_id_inputs_are_declared_not_applicable(tmp_path):
    session = robustness_session(token_model(tmp_path / "tok.onnx"))
    ids = np.zeros((4, 8), np.int64)
    result = evaluate_robustness(session, ids, np.zeros(4, np.int64), CONFIG)
    assert result["applicable"] is False
    assert "2 inputs" in result["reason"]


def test_single_integer_input_is_declared_not_applicable(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((20, 10), np.float32), "E")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["emb"]),
         helper.make_node("ReduceMean", ["emb"], ["logits"], axes=[1], keepdims=0)],
        "ids", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], [table])
    path = tmp_path / "ids.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    result = evaluate_robustness(robustness_session(path), np.zeros((4, 6), np.int64),
                                 np.zeros(4, np.int64), CONFIG)
    assert result == {"applicable": False, "reason": result["reason"]}
    assert "token ids" in result["reason"] and "tensor(int64)" in result["reason"]


def test_pgd_stays_in_the_ball_and_noise_is_seeded():
    model = trained_tiny()
    x, y = eval_arrays(16)
    xt = torch.from_numpy(x)
    adversarial = pgd(model, xt, torch.from_numpy(y), eps=0.2, steps=3)
    assert float((adversarial - xt).abs().max()) <= 0.2 + 1e-6
    assert np.array_equal(sign_noise(x, 0.1, seed=3), sign_noise(x, 0.1, seed=3))
    assert np.allclose(np.abs(sign_noise(x, 0.1) - x), 0.1, atol=1e-6)


@pytest.mark.parametrize("make, message", [
    (lambda: parse_epsilons("0.05,abc"), "--robustness '0.05,abc' is not valid"),
    (lambda: parse_epsilons("-0.1"), "positive numbers"),
    (lambda: parse_epsilons(""), "not valid"),
    (lambda: parse_attacks("fgsm,sqare"), "--attacks 'fgsm,sqare': unknown attack 'sqare' (did you mean 'square'?)"),
    (lambda: RobustnessConfig(eps=(0.0,)), "eps must all be > 0"),
    (lambda: RobustnessConfig(attacks=("pdg",)), "did you mean 'pgd'"),
    (lambda: RobustnessConfig(query_budget=0), "query_budget must be >= 1"),
    (lambda: RobustnessConfig(attribution_threshold=2.0), "in [-1, 1]"),
])
def test_bad_settings_name_the_field(make, message):
    with pytest.raises(ValueError, match=None) as info:
        make()
    assert message in str(info.value)


def test_table_and_plot_show_clean_vs_attacked(tmp_path):
    rows = [{"name": "teacher", "robustness": {"applicable": True, "samples": 8, "scale": 1.0,
                                               "clean": 0.9, "noise": {"0.1": 0.88},
                                               "square": {"0.1": 0.5},
                                               "queries": {"0.1": {"median": 12, "mean": 20.4}}},
             "attribution": {"rho": 1.0, "method": "gradient x input", "flagged": False}},
            {"name": "04-quantize", "robustness": {"applicable": True, "samples": 8, "scale": 1.0,
                                                   "clean": 0.85, "noise": {"0.1": 0.8},
                                                   "square": {"0.1": 0.3}},
             "attribution": {"rho": 0.2, "method": "occlusion", "flagged": True}},
            {"name": "bert", "robustness": {"applicable": False, "reason": "token ids"}}]
    table = robustness_table(rows)
    assert "| teacher | 0.900 | 0.880 | 0.500 (12/20 q) | 1.000 (gradient x input) |" in table
    assert "0.200 (occlusion) **drifted**" in table
    assert "not applicable: token ids" in table
    assert robustness_plot(rows, tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_the_package_imports_only_core_and_bench_and_torch_lazily():
    import subprocess
    import sys

    code = ("import sys, edgepack.bench.robustness, edgepack.bench.robustness.robustness_report, "
            "edgepack.bench.robustness.attribution, edgepack.bench.robustness.attacks.pgd; "
            "print(','.join(sorted(m for m in sys.modules if m == 'torch' or m.startswith(("
            "'edgepack.compress', 'edgepack.export', 'edgepack.cli', 'edgepack.pipeline', "
            "'edgepack.zoo')))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
