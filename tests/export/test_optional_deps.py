"""A broken optional dependency is bad input naming the package to fix (exit 2), not a bug."""

from __future__ import annotations

import sys
import types

import pytest

from edgepack.core.deps import BrokenDependency, import_optional
from edgepack.cli.main import main


@pytest.fixture
def broken_site(tmp_path, monkeypatch):
    """site-packages with ``fakevision`` (fails at import, as a torchvision built for another
    torch does) and ``fakeoptimum``, which imports it."""
    site = tmp_path / "site-packages"
    (site / "fakevision").mkdir(parents=True)
    (site / "fakevision" / "__init__.py").write_text(
        "raise RuntimeError('operator fakevision::nms does not exist')\n")
    (site / "fakeoptimum").mkdir()
    (site / "fakeoptimum" / "__init__.py").write_text("import fakevision\n")
    monkeypatch.syspath_prepend(str(site))
    for name in ("fakevision", "fakeoptimum"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    return site


def test_the_package_that_broke_is_named_with_the_fix(broken_site):
    with pytest.raises(BrokenDependency) as info:
        import_optional("fakeoptimum", None, "optimum-onnx", "hf")
    message = str(info.value)
    assert message.startswith("could not import optimum-onnx: fakevision failed to import "
                              "(RuntimeError: operator fakevision::nms does not exist)")
    assert "pip uninstall fakevision" in message and "\n" not in message


def test_a_missing_package_says_how_to_install_it():
    with pytest.raises(BrokenDependency, match=r"could not import edgepack_absent: "
                       r"edgepack_absent failed to import \(ModuleNotFoundError: .*\); install "
                       r"it with pip install 'edgepack\[hf\]'"):
        import_optional("edgepack_absent", None, "edgepack_absent", "hf")


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A real tiny BERT folder (the --hf checks read its config and weights), made before a
    test's broken site is planted."""
    from transformers import BertConfig, BertForSequenceClassification

    folder = tmp_path_factory.mktemp("bert")
    BertForSequenceClassification(BertConfig(
        vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=32, max_position_embeddings=16)).save_pretrained(folder)
    return folder


def test_cli_hf_export_with_a_broken_optimum_exits_2_with_one_line(bert_folder, broken_site,
                                                                    tmp_path, monkeypatch,
                                                                    capsys):
    class LazyOptimum(types.ModuleType):
        """What transformers' lazy importer does: the attribute access imports the rest."""

        def __getattr__(self, name):
            try:
                import fakeoptimum  # noqa: F401
            except Exception as exc:
                raise RuntimeError(f"Could not import module '{name}'. Are this object's "
                                   "requirements defined correctly?") from exc

    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", LazyOptimum("onnx"))
    folder = bert_folder
    code = main(["export", "--hf", str(folder), "--task", "text-classification",
                 "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("edgepack: ")
    assert "could not import optimum-onnx: fakevision failed to import" in err
    assert len(err.splitlines()) == 1
