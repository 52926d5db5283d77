"""The parity rule on other kernel paths of this CPU: torch's lowered by its own switches
(ATen, oneDNN, MKL), ONNX Runtime's by faked CPU flags (qemu-x86_64 with an older CPU model,
:mod:`edgepack.bench.kernel_paths`). The same exported models pass on every path, and a model with one
layer 1% off fails on every path. On a CPU with AVX-512 or AMX, the native path is that one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack.bench.kernel_paths import EMULATED_CPUS, TORCH_PATHS, cpu_flags, qemu, run_decoder_steps
from edgepack.export.decoder_parity import DECODE_STEPS, PROMPT_LENGTH, DecoderCase, check_decoder_parity
from edgepack.export.hf import DECODER_TASK, export_hf
from tests.decoder_architectures import make_architecture_folder, perturb_one_layer
from tests.tiny_decoder import train_tiny_tokenizer

pytest.importorskip("optimum.exporters.onnx")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny Llama export (tied embedding) and a BERT folder."""
    import torch
    from transformers import BertConfig, BertModel

    root = tmp_path_factory.mktemp("kernel-paths")
    train_tiny_tokenizer(root / "tokenizer")
    models = {}
    for model_type in ("llama",):
        folder = make_architecture_folder(model_type, root / model_type, root / "tokenizer")
        models[model_type] = (folder, export_hf(folder, DECODER_TASK,
                                                root / f"{model_type}-onnx").artifact)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                         num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=64)).save_pretrained(root / "bert")
    models["bert"] = root / "bert"
    return root, models


def _torch_paths() -> list:
    """torch's lowered paths; the AVX2 one only where the native path is wider."""
    wide = bool({"avx512f", "amx_tile"} & cpu_flags())
    return [pytest.param(name, marks=pytest.mark.skipif(
        name.startswith("torch AVX2") and not wide,
        reason="this CPU's native path is AVX2: the native run covers it"))
        for name in sorted(TORCH_PATHS)]


@pytest.mark.parametrize("path", _torch_paths())
def test_torch_kernel_paths_pass_the_same_rule(exported, path, tmp_path):
    """Each torch path in a process of its own (the switches act when torch is imported):
    decoder, torch and --hf encoder exports pass; the perturbed decoder fails."""
    root, models = exported
    folder, onnx_path = models["llama"]
    env = {**os.environ, **TORCH_PATHS[path], "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "tests.export.kernel_path_worker", str(folder),
                           str(onnx_path), str(models["bert"]), str(tmp_path)],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    verdicts = json.loads(done.stdout.strip().splitlines()[-1])
    for check in ("decoder", "torch_export", "hf_encoder"):
        assert verdicts[check]["ok"], (path, check, verdicts)
    assert verdicts["decoder_perturbed_ok"] is False
    wanted = TORCH_PATHS[path].get("ATEN_CPU_CAPABILITY")
    assert wanted is None or verdicts["capability"].lower() == wanted   # the switch took


def _emulated_cpus() -> list:
    """The ONNX Runtime paths to fake: SSE4.2 always, AVX2 where the native path is wider."""
    wide = bool({"avx512f", "amx_tile"} & cpu_flags())
    return [pytest.param(name, marks=pytest.mark.skipif(
        "AVX2" in name and not wide, reason="this CPU's native path is AVX2: nothing to fake"))
        for name in sorted(EMULATED_CPUS)]


@pytest.mark.skipif(qemu() is None, reason="qemu-x86_64 is not installed (Debian: apt-get "
                    "install qemu-user-static; .ci/run installs it as root)")
@pytest.mark.parametrize("cpu", _emulated_cpus())
def test_onnx_runtime_on_faked_cpu_flags_passes_and_a_perturbed_layer_fails(exported, cpu):
    """ONNX Runtime's kernels for an older CPU: its logits differ from the native ones
    (another kernel path, not a no-op), the export passes the rule, and a layer 1% off
    fails it."""
    import numpy as np
    from transformers import AutoModelForCausalLM

    _, models = exported
    folder, onnx_path = models["llama"]
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    seen = {}

    def runner(prompt, fed):
        seen["native"] = run_decoder_steps(onnx_path, prompt, fed)[0]
        seen["emulated"], cache = run_decoder_steps(onnx_path, prompt, fed,
                                                    qemu_cpu=EMULATED_CPUS[cpu])
        return seen["emulated"], cache

    short = [DecoderCase(PROMPT_LENGTH, DECODE_STEPS)]
    parity = check_decoder_parity(model, onnx_path, run_onnx=runner, cases=short)
    assert parity["ok"], parity["lines"]
    assert max(float(np.abs(a - b).max()) for a, b in zip(seen["native"], seen["emulated"])) > 0
    perturb_one_layer(model, layer=1)
    assert not check_decoder_parity(model, onnx_path, run_onnx=runner, cases=short)["ok"]
