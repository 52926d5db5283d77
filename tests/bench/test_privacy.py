"""Membership inference: the figures against known answers, the attacks on models that do
and do not leak, and every bad member set refused with one line."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.bench.privacy import MIN_SAMPLES, MemberSets, PrivacyConfig, check_member_sets, \
    evaluate_membership
from edgepack.bench.privacy.metrics import balanced_accuracy, roc_auc, summarize, tpr_at_fpr
from edgepack.bench.privacy.membership_scores import (confidence_score, correct_score,
                                                      entropy_score, lira_score, loss_score,
                                                      scaled_confidence)
from edgepack.core.errors import BadInput
from tests.bench.conftest import matmul_add, reference_outputs


def test_auc_is_the_mann_whitney_statistic_with_ties_halved():
    assert roc_auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert roc_auc(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 0.0
    assert roc_auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    # pairs: (2 > 1), (2 = 2) half, (0 < 1), (0 < 2): 1.5 of 4
    assert roc_auc(np.array([2.0, 0.0]), np.array([1.0, 2.0])) == pytest.approx(0.375)


def test_auc_and_low_fpr_tpr_match_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    members, non_members = np.round(rng.normal(0.4, 1, 700), 1), np.round(rng.normal(0, 1, 700), 1)
    truth = np.r_[np.ones(700), np.zeros(700)]
    scores = np.r_[members, non_members]
    assert roc_auc(members, non_members) == pytest.approx(metrics.roc_auc_score(truth, scores))
    fpr, tpr, _ = metrics.roc_curve(truth, scores)
    assert tpr_at_fpr(members, non_members, 0.01) == pytest.approx(tpr[fpr <= 0.01].max())


def test_balanced_accuracy_is_fitted_on_the_other_half():
    """On pure noise the best threshold chosen in-sample looks better than chance; fitted on
    one half and scored on the other it does not."""
    rng = np.random.default_rng(1)
    found = [balanced_accuracy(rng.normal(size=200), rng.normal(size=200), rng)
             for _ in range(30)]
    assert abs(np.mean(found) - 0.5) < 0.02
    separated = balanced_accuracy(np.full(200, 2.0) + rng.normal(0, 0.1, 200),
                                  rng.normal(0, 0.1, 200), rng)
    assert separated == 1.0


def test_summary_intervals_hold_the_figure_and_cover_chance_on_noise():
    rng = np.random.default_rng(2)
    out = summarize(rng.normal(size=300), rng.normal(size=300), resamples=100)
    for key in ("auc", "tpr_at_1pct_fpr", "balanced_accuracy"):
        low, high = out[f"{key}_interval"]
        assert low <= out[key] <= high
    assert out["auc_interval"][0] < 0.5 < out["auc_interval"][1]
    with pytest.raises(ValueError, match="NaN"):
        summarize(np.array([np.nan] * 200), np.zeros(200))


def test_the_gap_attack_auc_is_half_plus_half_the_accuracy_gap():
    """Yeom et al.'s gap attack: a member if classified right. Its two-valued score ties
    within each side, and the mid-rank AUC comes out as 0.5 + (acc_m - acc_n) / 2."""
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 4, 400)
    logits = rng.normal(size=(400, 4))
    logits[np.arange(300), labels[:300]] += 10   # all 200 members right, half the rest
    members, non_members = slice(0, 200), slice(200, 400)
    right = logits.argmax(1) == labels
    gap = right[members].mean() - right[non_members].mean()
    score = correct_score(logits, labels)
    assert set(np.unique(score)) == {0.0, 1.0}
    assert roc_auc(score[members], score[non_members]) == pytest.approx(0.5 + gap / 2)


def test_scores_rank_what_each_attack_claims():
    logits = np.array([[5.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 0])
    assert loss_score(logits, labels)[0] > loss_score(logits, labels)[1]
    assert entropy_score(logits)[0] > entropy_score(logits)[1]
    p = np.exp(5) / (np.exp(5) + 2)
    assert scaled_confidence(logits, labels)[0] == pytest.approx(np.log(p / (1 - p)))
    # a confident logit whose 1 - p rounds to 0 in float64 still scores finitely
    assert np.isfinite(scaled_confidence(np.array([[80.0, 0.0]]), np.array([0]))).all()


def test_losses_below_float_epsilon_stay_ranked():
    """Margins of 40 to 60 give losses far below 1e-16, which log_softmax rounds to exactly 0;
    the scores keep them apart, so confident members do not tie with confident non-members
    and the TPR at a low FPR is not lost to a block of ties."""
    margins = np.array([40.0, 45.0, 50.0, 55.0, 60.0])
    logits = np.stack([margins, np.zeros_like(margins)], axis=1)
    labels = np.zeros(len(margins), dtype=np.int64)
    for score in (loss_score(logits, labels), confidence_score(logits)):
        assert (score < 0).all() and (np.diff(score) > 0).all()
    assert loss_score(logits, labels) == pytest.approx(-np.exp(-margins), rel=1e-9)
    assert loss_score(np.array([[2.0, 0.0, 1.0]]), np.array([2]))[0] == pytest.approx(
        1.0 - np.log(np.exp(2.0) + 1.0 + np.exp(1.0)))
    # members a little more confident than non-members, all of them past the rounding
    members = np.stack([np.linspace(41, 60, 200), np.zeros(200)], axis=1)
    non_members = np.stack([np.linspace(38, 57, 200), np.zeros(200)], axis=1)
    zeros = np.zeros(200, dtype=np.int64)
    assert tpr_at_fpr(loss_score(members, zeros), loss_score(non_members, zeros)) > 0.1


def test_lira_removes_what_every_model_finds_easy():
    """Both examples are as confident on the target; only one is above what references that
    never saw it give it, so LiRA ranks it higher where the raw loss cannot tell them apart."""
    target = np.array([[4.0, 0.0], [4.0, 0.0]])
    references = [np.array([[4.0, 0.0], [1.0, 0.0]]), np.array([[3.8, 0.0], [1.2, 0.0]])]
    labels = np.array([0, 0])
    assert loss_score(target, labels)[0] == loss_score(target, labels)[1]
    scores = lira_score(target, labels, references)
    assert scores[1] > scores[0]


def _sets(x_members, y_members, x_non, y_non) -> MemberSets:
    return MemberSets({"x": x_members}, y_members, {"x": x_non}, y_non)


def _linear_sets(rng, n=300):
    """Members labelled as the model predicts (it "fit" them), non-members at random."""
    xm = rng.standard_normal((n, 16)).astype(np.float32)
    xn = rng.standard_normal((n, 16)).astype(np.float32)
    return _sets(xm, reference_outputs(xm).argmax(1), xn, rng.integers(0, 10, n))


def test_a_model_that_fits_its_members_is_caught_and_one_that_does_not_is_not(tmp_path):
    from edgepack.bench.robustness import robustness_session

    session = robustness_session(matmul_add(tmp_path / "m.onnx"))
    rng = np.random.default_rng(3)
    config = PrivacyConfig(attacks=("loss", "confidence", "entropy"), bootstrap=50)
    leaky = evaluate_membership(session, _linear_sets(rng), config)
    assert leaky["attacks"]["loss"]["auc"] > 0.9
    assert leaky["attacks"]["loss"]["auc_interval"][0] > 0.85
    assert leaky["member_accuracy"] == 1.0
    # confidence and entropy ignore labels: the two sets' inputs are alike, so they see nothing
    assert abs(leaky["attacks"]["confidence"]["auc"] - 0.5) < 0.08
    x = rng.standard_normal((600, 16)).astype(np.float32)
    y = rng.integers(0, 10, 600)
    fair = evaluate_membership(session, _sets(x[:300], y[:300], x[300:], y[300:]), config)
    low, high = fair["attacks"]["loss"]["auc_interval"]
    assert low < 0.5 < high


def test_lira_is_said_not_run_without_references(tmp_path):
    from edgepack.bench.robustness import robustness_session

    session = robustness_session(matmul_add(tmp_path / "m.onnx"))
    out = evaluate_membership(session, _linear_sets(np.random.default_rng(4)),
                              PrivacyConfig(attacks=("loss", "lira"), bootstrap=20))
    assert out["attacks"]["lira"] == {"run": False, "reason": out["attacks"]["lira"]["reason"]}
    assert "reference" in out["attacks"]["lira"]["reason"]


@pytest.mark.parametrize("change, message", [
    ("overlap", "appear among both"),
    ("size", "differ in size"),
    ("small", "too few"),
    ("labels", "different label spaces"),
    ("shape", "per sample"),
    ("names", "different arrays"),
    ("rows", "rows but 'labels'"),
])
def test_bad_member_sets_are_refused_by_name(change, message):
    rng = np.random.default_rng(5)
    n = MIN_SAMPLES
    xm, xn = rng.standard_normal((n, 16)).astype(np.float32), \
        rng.standard_normal((n, 16)).astype(np.float32)
    ym, yn = np.arange(n) % 10, np.arange(n) % 10
    sets = _sets(xm, ym, xn, yn)
    if change == "overlap":
        sets.non_members["x"][7] = xm[3]
    elif change == "size":
        sets = _sets(xm, ym, xn[:-1], yn[:-1])
    elif change == "small":
        sets = _sets(xm[:n - 1], ym[:n - 1], xn[:n - 1], yn[:n - 1])
    elif change == "labels":
        sets = _sets(xm, ym, xn, yn % 5)
    elif change == "shape":
        sets = _sets(xm, ym, xn[:, :8], yn)
    elif change == "names":
        sets = MemberSets({"x": xm}, ym, {"input": xn}, yn)
    elif change == "rows":
        sets = _sets(xm, ym[:-1], xn, yn)
    with pytest.raises(BadInput, match=message):
        check_member_sets(sets)


def test_labels_beyond_the_models_classes_are_refused():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((200, 4)).astype(np.float32)
    labels = np.arange(100) % 12
    with pytest.raises(BadInput, match="12|outputs"):
        check_member_sets(_sets(x[:100], labels, x[100:], labels), classes=10)


def test_config_refuses_what_cannot_give_a_figure():
    with pytest.raises(ValueError, match=f">= {MIN_SAMPLES}"):
        PrivacyConfig(samples=50)
    with pytest.raises(ValueError, match="references"):
        PrivacyConfig(samples=200, attacks=("lira",), references=0)
    with pytest.raises(ValueError, match="attacks"):
        PrivacyConfig(attacks=("lossy",))
    with pytest.raises(ValueError, match="bootstrap"):
        PrivacyConfig(bootstrap=3)


def _write_sets(tmp_path, rng, overlap=False):
    sets = _linear_sets(rng)
    if overlap:
        sets.non_members["x"][0] = sets.members["x"][0]
    np.savez(tmp_path / "members.npz", x=sets.members["x"], labels=sets.member_labels)
    np.savez(tmp_path / "non.npz", x=sets.non_members["x"], labels=sets.non_member_labels)
    return str(tmp_path / "members.npz"), str(tmp_path / "non.npz")


def test_bench_privacy_on_the_command_line(tmp_path, capsys):
    import json

    from edgepack.cli.main import main

    model, ref1, ref2 = (str(matmul_add(tmp_path / f"{n}.onnx", seed=s))
                         for n, s in (("m", 0), ("r1", 1), ("r2", 2)))
    members, non = _write_sets(tmp_path, np.random.default_rng(7))
    out = tmp_path / "out.json"
    code = main(["bench", "--privacy", model, "--members", members, "--non-members", non,
                 "--references", ref1, ref2, "--bootstrap", "30", "--json", str(out),
                 "--markdown", str(tmp_path / "out.md"), "--warmup", "1", "--min-runs", "3",
                 "--min-time", "0"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "| m.onnx | loss |" in stdout and "| m.onnx | LiRA |" in stdout
    found = json.loads(out.read_text())[0]["privacy"]
    assert found["attacks"]["loss"]["auc"] > 0.9 and found["references"] == 2
    assert "Membership inference on 300" in (tmp_path / "out.md").read_text()


@pytest.mark.parametrize("flags, message", [
    (["--members", "M"], "--members needs --privacy"),
    (["--privacy"], "needs --members"),
    (["--privacy", "--members", "M", "--non-members", "N", "--privacy-attacks", "lira"],
     "--references"),
    (["--privacy", "--members", "M", "--non-members", "N", "--bootstrap", "x"], "--bootstrap"),
    (["--privacy", "--members", "M", "--non-members", "N", "--privacy-attacks", "lossy"],
     "lossy"),
    (["--privacy", "--members", "M", "--non-members", "OVERLAP"], "appear among both"),
])
def test_bench_privacy_bad_input_is_one_line_and_exit_2(tmp_path, capsys, flags, message):
    import subprocess
    import sys

    model = str(matmul_add(tmp_path / "m.onnx"))
    members, non = _write_sets(tmp_path, np.random.default_rng(8), overlap="OVERLAP" in flags)
    flags = [members if f == "M" else non if f in ("N", "OVERLAP") else f for f in flags]
    run = subprocess.run([sys.executable, "-m", "edgepack", "bench", model, *flags,
                          "--json", str(tmp_path / "o.json")], capture_output=True, text=True)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr and len(run.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.json").exists()
