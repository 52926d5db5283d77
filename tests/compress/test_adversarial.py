"""Adversarial fine-tuning (PGD examples in each batch: Madry's replacement rows or TRADES'
KL term) as an option of pruning's fine-tuning and of distillation: mechanism, effect,
record, and bad settings."""

import copy

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import edgepack.compress.adversarial as adversarial_module
from edgepack.bench.robustness.attacks.pgd import pgd
from edgepack.compress.adversarial import (AdversarialConfig, AdversarialLoss, epoch_score,
                                           trades_divergence)
from edgepack.compress.distill import DistillConfig, distill
from edgepack.compress.prune import PruneConfig, finetune_batches, prune
from edgepack.compress.trainer import TrainConfig, cross_entropy_loss, fit
from edgepack.zoo.mnist1d_models import mnist1d_cnn
from tests.bench.robust_models import mnist1d_arrays, trained_tiny

EPS = 0.3   # in input standard deviations


def _data():
    a = mnist1d_arrays()
    x, y = torch.from_numpy(a["x"]), torch.from_numpy(a["y"])
    xt, yt = torch.from_numpy(a["x_test"]), torch.from_numpy(a["y_test"])
    return {"train": DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True),
            "evaluation": DataLoader(TensorDataset(xt, yt), batch_size=512)}


def _pgd_accuracy(model, data) -> float:
    x, y = data["evaluation"].dataset.tensors
    attacked = pgd(model, x, y, EPS * float(x.std()), steps=10, seed=0)
    with torch.no_grad():
        return float((model(attacked).argmax(1) == y).float().mean())


def test_the_first_ratio_of_each_batch_becomes_pgd_examples_inside_the_ball():
    model = trained_tiny()
    x, y = _data()["evaluation"].dataset.tensors
    x, y = x[:32], y[:32]
    seen = {}

    def spy(m, batch):
        seen["inputs"] = batch[0]
        return cross_entropy_loss(m, batch)

    torch.manual_seed(0)
    loss = AdversarialLoss(spy, AdversarialConfig(eps=EPS, steps=3, ratio=0.25), scale=1.0)
    attacked_loss = loss(model, (x, y))[0]
    moved = (seen["inputs"] - x).abs().amax(dim=(1, 2))
    assert (moved[:8] > 0).all() and (moved[:8] <= EPS + 1e-6).all()
    assert (moved[8:] == 0).all()                      # the rest of the batch stays clean
    assert attacked_loss.item() > cross_entropy_loss(model, (x, y))[0].item()
    assert loss.crafted == 8 and loss.craft_seconds > 0


def test_trades_adds_beta_times_the_kl_between_clean_and_crafted_answers(monkeypatch):
    """TRADES: the stage's loss sees the clean batch; the added term is beta * KL(f(x) ||
    f(x_adv)) with x_adv inside the ball and crafted to push that KL up."""
    model = trained_tiny()
    x, y = _data()["evaluation"].dataset.tensors
    x, y = x[:32], y[:32]
    seen, crafted = {}, []

    def spy(m, batch):
        seen["inputs"] = batch[0]
        return cross_entropy_loss(m, batch)

    def recording_pgd(*args, **kwargs):
        crafted.append(pgd(*args, **kwargs))
        return crafted[-1]

    monkeypatch.setattr(adversarial_module, "pgd", recording_pgd)
    torch.manual_seed(0)
    config = AdversarialConfig(eps=EPS, steps=5, loss="trades", beta=3.0, ratio=0.5)
    loss = AdversarialLoss(spy, config, scale=1.0)(model, (x, y))[0]
    assert torch.equal(seen["inputs"], x)                        # the clean batch, untouched
    (attacked,) = crafted
    assert attacked.shape == x[:16].shape                         # ratio 0.5 of 32 rows
    assert float((attacked - x[:16]).abs().max()) <= EPS + 1e-6
    with torch.no_grad():
        clean, divergence = cross_entropy_loss(model, (x, y))[0], \
            trades_divergence(model(attacked), model(x[:16]))
        noise = x[:16] + EPS * torch.randn_like(x[:16]).sign()
        assert divergence > trades_divergence(model(noise), model(x[:16]))   # crafted, not noise
    assert loss.item() == pytest.approx(clean.item() + 3.0 * divergence.item(), rel=1e-5)


def test_under_a_defence_the_epoch_kept_is_picked_on_clean_and_pgd_accuracy():
    data = _data()
    x, y = data["evaluation"].dataset.tensors
    model = copy.deepcopy(trained_tiny())
    defended = AdversarialLoss(cross_entropy_loss, AdversarialConfig(eps=EPS), scale=1.0)
    assert epoch_score(cross_entropy_loss, data["evaluation"]) is None   # no defence
    score = epoch_score(defended, data["evaluation"])
    with torch.no_grad():
        clean = float((model(x).argmax(1) == y).float().mean())
    assert score(model) == pytest.approx((clean + _pgd_accuracy(model, data)) / 2)
    # fit keeps the epoch the score likes best, not the most accurate one
    scores, kept = iter([0.2, 0.9, 0.5]), []

    def select(m):
        kept.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    history = fit(model, data["train"], TrainConfig(epochs=3, lr=1e-3, progress=False),
                  eval_batches=data["evaluation"], select=select)
    assert history["best_epoch"] == 1 and history["best_metric"] == 0.9
    assert [h["selection_score"] for h in history["history"]] == [0.2, 0.9, 0.5]
    assert all(torch.equal(v, kept[1][k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("settings, ratio, beta", [
    ({"loss": "trades"}, 1.0, 1.0), ({}, 0.5, None), ({"loss": "trades", "beta": 6}, 1.0, 6.0)])
def test_each_loss_has_its_own_default_share_and_weight(settings, ratio, beta):
    config = AdversarialConfig(**settings)
    assert (config.ratio, config.beta) == (ratio, beta)


@pytest.mark.parametrize("name, adversarial", [
    ("madry", {"eps": EPS, "steps": 3, "ratio": 0.5}),
    ("trades", {"eps": EPS, "steps": 3, "loss": "trades", "beta": 3.0})])
def test_adversarial_finetuning_raises_pgd_accuracy_and_records_cost_and_effect(name, adversarial):
    data = _data()
    results = {}
    for label, settings in (("plain", {}), ("defended", adversarial)):
        model = copy.deepcopy(trained_tiny())
        config = PruneConfig(method="unstructured", ratio=0.1, finetune_epochs=4, lr=5e-3,
                             adversarial=settings)
        record = prune(model, config, data["evaluation"].dataset.tensors[0][:1], data=data,
                       progress=False).record
        results[label] = (_pgd_accuracy(model, data), record)
    (plain, plain_record), (defended, record) = results["plain"], results["defended"]
    # seen: madry 0.04 -> 0.13 (0.14 on seed 1), trades (beta 3) 0.05 -> 0.11
    assert defended > plain + 0.05, (name, plain, defended)
    assert "adversarial" not in plain_record
    effect = record["adversarial"]
    assert effect["pgd_accuracy"] == pytest.approx(defended, abs=0.02)
    assert 0 < effect["craft_seconds"] < effect["train_seconds"]
    assert effect["clean_accuracy"] > 0.3
    assert effect["crafted_examples"] == 4 * 600 * (2 if effect["loss"] == "trades" else 1)


def test_distillation_takes_the_defence_too():
    data = _data()
    torch.manual_seed(0)
    student = mnist1d_cnn(width=8)
    record = distill(trained_tiny(), student, DistillConfig(
        epochs=1, adversarial={"eps": EPS, "steps": 2, "ratio": 0.5}), data,
        progress=False).record
    assert set(record["adversarial"]) >= {"craft_seconds", "train_seconds", "clean_accuracy",
                                          "pgd_accuracy"}
    # 1,200 rows in batches of 128: nine of 64 attacked rows and one of 24
    assert record["adversarial"]["crafted_examples"] == 9 * 64 + 24


def test_with_a_teacher_attacked_rows_learn_its_answer_on_the_clean_input():
    """The teacher is asked once, on the clean training inputs, never on an attacked copy
    (it is no more robust than the student: asked there, it would teach its mistakes)."""
    data = _data()
    teacher, seen = copy.deepcopy(trained_tiny()), []
    teacher.register_forward_hook(lambda module, args, out: seen.append(args[0].detach()))
    student = copy.deepcopy(trained_tiny()).requires_grad_(True)   # a teacher elsewhere
    config = PruneConfig(method="unstructured", ratio=0.1, finetune_epochs=1,
                         adversarial={"eps": EPS, "steps": 2, "ratio": 0.5})
    prune(student, config, data["evaluation"].dataset.tensors[0][:1], data=data,
          teacher=teacher, progress=False)
    train_inputs = data["train"].dataset.tensors[0]
    seen = torch.cat(seen).flatten(1)
    assert len(seen) == len(train_inputs)                     # one pass over the rows ...
    nearest = torch.cdist(seen, train_inputs.flatten(1),
                          compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
    assert (nearest == 0).all()                               # ... each a clean training row
    plain = PruneConfig(method="unstructured", ratio=0.1, finetune_epochs=1)
    assert len(finetune_batches(plain, data, teacher).dataset.tensors) == 2   # asked per batch


@pytest.mark.parametrize("make, message", [
    (lambda: PruneConfig(adversarial={"epsilon": 0.1}),
     "unknown key 'epsilon' (did you mean 'eps'?)"),
    (lambda: PruneConfig(adversarial={"eps": 0}), "adversarial.eps must be > 0"),
    (lambda: DistillConfig(adversarial={"ratio": 1.5}), "adversarial.ratio=1.5 is outside"),
    (lambda: DistillConfig(adversarial={"steps": 0}), "adversarial.steps must be >= 1"),
    (lambda: PruneConfig(adversarial={"loss": "trade"}),
     "adversarial.loss='trade' is not valid; expected one of 'madry', 'trades'"),
    (lambda: PruneConfig(adversarial={"beta": 2.0}), "adversarial.beta weighs the TRADES term"),
    (lambda: PruneConfig(adversarial={"loss": "trades", "beta": 0}),
     "adversarial.beta must be > 0"),
    (lambda: DistillConfig(objective="embedding", adversarial={"eps": 0.1}),
     "needs objective='logits'"),
])
def test_bad_defence_settings_name_the_field(make, message):
    with pytest.raises(ValueError) as info:
        make()
    assert message in str(info.value)


def test_the_defence_round_trips_through_the_config_dict():
    config = PruneConfig(adversarial={"eps": 0.1, "steps": 5, "ratio": 0.5})
    assert PruneConfig.from_dict(config.to_dict()) == config
