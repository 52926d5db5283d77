"""Run the three parity checks in a process of its own, so the kernel switches in its
environment (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``, ``MKL_ENABLE_INSTRUCTIONS``)
take effect before torch is imported; print one JSON line of the verdicts.

    python -m tests.export.kernel_path_worker DECODER_HF_FOLDER DECODER_ONNX BERT_FOLDER SCRATCH
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _worst_ratio(parity: dict) -> float:
    worst = parity["worst"]
    return worst["error"] / worst["allowed"]


def main(decoder_folder: str, decoder_onnx: str, bert_folder: str, scratch: str) -> dict:
    import torch
    from torch import nn
    from transformers import AutoModelForCausalLM

    from edgepack.export.decoder_parity import check_decoder_parity
    from edgepack.export.hf import export_hf
    from edgepack.export.torch_export import ExportConfig, export_onnx
    from tests.decoder_architectures import perturb_one_layer

    decoder = AutoModelForCausalLM.from_pretrained(decoder_folder).eval()
    verdicts = {"capability": torch.backends.cpu.get_cpu_capability()}
    parity = check_decoder_parity(decoder, Path(decoder_onnx))
    verdicts["decoder"] = {"ok": parity["ok"], "worst": _worst_ratio(parity)}
    perturb_one_layer(decoder, layer=0)   # one layer 1% off: must fail on this path too
    verdicts["decoder_perturbed_ok"] = check_decoder_parity(decoder, Path(decoder_onnx))["ok"]
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv1d(1, 8, 5), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 36, 10))
    result = export_onnx(cnn, ExportConfig(exporter="torchscript", opset=17),
                         torch.randn(2, 1, 40), Path(scratch) / "cnn.onnx",
                         parity_inputs=torch.randn(8, 1, 40))
    verdicts["torch_export"] = {"ok": result.record["parity"]["ok"],
                                "worst": _worst_ratio(result.record["parity"])}
    result = export_hf(bert_folder, "feature-extraction", Path(scratch) / "bert")
    verdicts["hf_encoder"] = {"ok": result.record["parity"]["ok"],
                              "worst": _worst_ratio(result.record["parity"])}
    return verdicts


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:5])))
