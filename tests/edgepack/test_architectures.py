"""The networks users bring, on tiny widths: every stage runs on every one of them.

The same sweep as ``benchmarks/sweep_architectures.py`` (prune structured 0.5 with heads ->
export with parity -> quantize with the default settings -> package -> bench), with the
TorchScript exporter and a few timed runs so the whole file takes seconds per model.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgepack.zoo import architectures
from edgepack.pipeline.architecture_sweep import SweepSettings, run_one
from tests.tiny_models import tiny_architectures
from edgepack.export.torch_export import ExportConfig, export_onnx

QUICK = SweepSettings(exporter="torchscript", export_dense=False, warmup=1, min_runs=2,
                      min_time_s=0.0, parity_rows=2, calibration_rows=4, agreement_rows=4)


# Covered in the quick run by the others: EfficientNet-B0's depthwise convolutions and
# squeeze-excitation blocks by MobileNetV3's, ConvNeXt's depthwise 7x7 and LayerNorm by
# MobileNetV3's and the ViT's. Run them with -m slow.
COVERED = ("efficientnet_b0", "convnext_atto")


def _marked(arch):
    marks = [pytest.mark.slow] if arch.builder in COVERED else []
    return pytest.param(arch, id=arch.builder, marks=marks)


@pytest.mark.parametrize("arch", [_marked(a) for a in tiny_architectures()])
def test_every_stage_works_on_the_architecture(tmp_path, arch):
    row = run_one(arch, tmp_path, QUICK)
    # Allowed: quantize's own checks refusing int8 (exit 1, with the reason: no faster
    # here, or accurate only with every node in float) and the stages that need its output.
    quantize_refused = [r for r in row["refused"] if r["stage"] == "quantize"]
    assert all(r["exit_code"] == 1 and r["reason"] for r in quantize_refused)
    assert [r for r in row["refused"] if r["stage"] != "quantize"
            and r["reason"] != "skipped: needs quantize"] == []
    record = row["prune"]
    kinds_before, kinds_after = (record["params_by_kind"][k] for k in ("before", "after"))
    if arch.builder == "bert_classifier":  # the hidden size (embeddings) is kept
        assert kinds_after["embedding"] == kinds_before["embedding"]
        assert kinds_after["attention"] == kinds_before["attention"] // 2
    else:
        assert record["params_after"] < 0.6 * record["params_before"]
    if arch.builder in ("vit_tiny", "bert_classifier"):
        assert record["attention_heads_after"] == [2] * len(record["attention_heads_before"])
    assert row["parity_pruned"]["ok"]
    if "int8" not in row["latency"]:  # refused by quantize's checks: nothing to package
        assert quantize_refused and set(row["latency"]) == {"pruned"}
        return
    assert row["package"] == ["model.ort", "required_operators.config"]
    assert row["int8_agreement"]["cosine"] > 0.8  # random tiny weights, 4 calibration rows


@pytest.mark.parametrize("builder, params", [
    ("resnet18", 11_689_512), ("mobilenet_v3_small", 2_542_856),
    ("efficientnet_b0", 5_288_548), ("convnext_atto", 3_695_520), ("vit_tiny", 5_717_416)])
def test_reference_sizes_have_the_reference_parameter_counts(builder, params):
    """The definitions follow torchvision's and timm's: same layers, same counts."""
    model = getattr(architectures, builder)()
    assert sum(p.numel() for p in model.parameters()) == params


class DictOutputs(nn.Module):
    """Returns a dict with a nested tuple and an unset (None) field, as ModelOutput does."""

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(6, 4)

    def forward(self, x):
        y = self.linear(x)
        return {"logits": y, "hidden": (y * 2, y + 1), "attentions": None}


def test_dict_and_nested_tuple_outputs_export_with_names_from_keys(tmp_path):
    torch.manual_seed(0)
    result = export_onnx(DictOutputs(), ExportConfig(), torch.randn(2, 6), tmp_path / "m.onnx")
    record = result.record
    assert record["output_names"] == ["logits", "hidden.0", "hidden.1"]
    assert [o["name"] for o in record["parity"]["outputs"]][:3] == record["output_names"]
    assert record["parity"]["ok"]


def test_a_hugging_face_model_output_exports_through_the_api(tmp_path):
    model = architectures.bert_classifier(vocab_size=50, hidden_size=16, num_layers=1,
                                          num_heads=2, intermediate_size=32)
    ids = torch.randint(1, 50, (2, 8))
    config = ExportConfig(exporter="torchscript", input_names=("input_ids", "attention_mask"),
                          dynamic_axes=(1,))
    record = export_onnx(model, config, (ids, torch.ones_like(ids)), tmp_path / "b.onnx").record
    assert record["output_names"] == ["logits"] and record["parity"]["ok"]
