"""Our membership attacks against ART's on the same model and the same halves.

Skipped with the reason when ART is neither installed nor in the repository's ``.art``
folder (``pip install --no-deps --target .art adversarial-robustness-toolbox==1.20.1 six``).
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def referee():
    pytest.importorskip("sklearn")
    from benchmarks import art_membership, art_reference

    try:
        art_reference.import_art(REPO / ".art")
    except ImportError as error:
        pytest.skip(f"adversarial-robustness-toolbox is not importable ({error}); install it "
                    "with: pip install --no-deps --target .art "
                    "adversarial-robustness-toolbox==1.20.1 six")
    return art_membership


@pytest.fixture(scope="module")
def memorised(tmp_path_factory):
    """An MLP that memorises 300 random labels: members are fitted, non-members guessed."""
    import onnxruntime as ort

    from edgepack.export.torch_export import ExportConfig, export_onnx

    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 20)).astype(np.float32)
    y = rng.integers(0, 4, 600)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(150):   # partly memorised: some members still wrong, so scores spread
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(torch.from_numpy(x[:300])),
                                    torch.from_numpy(y[:300])).backward()
        optimizer.step()
    model.eval()
    path = tmp_path_factory.mktemp("art") / "m.onnx"
    export_onnx(model, ExportConfig(), (torch.from_numpy(x[:1]),), path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return model, session, (x[:300], y[:300]), (x[300:], y[300:])


def test_the_gap_attack_is_arts_rule_based_attack_and_lr_on_the_loss_ranks_as_ours(
        referee, memorised):
    model, session, members, non_members = memorised
    pairs, labelled = referee.compare(model, session, members, non_members, 4,
                                      attack_model="lr", seed=0)
    found = {p["ours"]: p for p in pairs}
    assert found["loss"]["ours_auc"] > 0.6          # there is something to find
    assert found["correct"]["difference"] < 1e-9    # the same rule
    assert found["loss"]["difference"] < 0.01       # one monotone score: the same ranking
    assert all(p["rows"] == (150, 150) for p in pairs)
    assert 0.0 <= labelled <= 1.0
