"""Hugging Face transformers model (a local folder) -> verified ONNX, through optimum-onnx.

optimum-onnx knows how to export each transformers architecture (which inputs, which
dynamic axes, which outputs per task); :func:`export_hf` drives it and then checks the
result by the rule of :mod:`edgepack.export.parity`: the transformers model runs in torch in float64
and in float32, and ONNX Runtime's outputs must be as close to the float64 run as a stated
multiple of torch's own float32 error, on generated token ids at two batch sizes and two
sequence lengths, with padding (a decoder: on prefills and decode steps with its KV cache,
:mod:`edgepack.export.decoder_parity`). optimum's own validation, a constant tolerance on its random inputs,
is not run: it passes or fails with the CPU's kernels, not with the model.

Models are read from a local folder only, never downloaded: the path must exist and every
load passes ``local_files_only=True``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from edgepack.core.checks import check_choice
from edgepack.core.deps import import_optional, quiet_library
from edgepack.core.stage import StageResult
from edgepack.core.files import output_folder, same_file
from edgepack.core.output_paths import check_output_folder, mark_onnx_file, written_by_edgepack
from edgepack.core.onnx_files import check_onnx_file, model_size_bytes, parameter_count
from edgepack.export.decoder_parity import check_decoder_parity
from edgepack.export.tied_weights import share_tied_embedding
from edgepack.export.parity import (PARITY_MULTIPLE, float64_twin, judge_output, parity_failure,
                                    reference_summary)

TASKS = ("feature-extraction", "text-classification", "text-generation-with-past")
DECODER_TASK = "text-generation-with-past"  # a decoder LLM with its KV cache as inputs/outputs
TASK_ALIASES = {"sequence-classification": "text-classification"}
PARITY_CASES = ((1, 12), (3, 12), (3, 7))  # (batch, sequence length)


def normalize_task(task: str) -> str:
    """The optimum task name for ``task`` (``sequence-classification`` is an alias)."""
    task = TASK_ALIASES.get(task, task)
    check_choice("export", "task", task, TASKS + tuple(TASK_ALIASES))
    return task


def check_local_model_dir(model_dir) -> Path:
    """Refuse anything but a local folder holding a transformers ``config.json`` and the
    model's own safetensors weights, each checked against the other and against the memory
    an export needs (:func:`edgepack.export.hf_folder.check_hf_folder`), before anything is loaded."""
    return checked_model_dir(model_dir)[0]


def checked_model_dir(model_dir) -> tuple[Path, list[str]]:
    """:func:`check_local_model_dir`, and the weights files the model is read from."""
    from edgepack.export.hf_folder import check_hf_folder

    path = Path(model_dir)
    if not path.exists():
        raise FileNotFoundError(f"--hf {model_dir}: no such local folder (models are read from "
                                "disk only, never downloaded from the Hugging Face Hub)")
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"--hf {model_dir}: expected a folder holding config.json and the "
                         "weights, as save_pretrained() writes it")
    return path, check_hf_folder(path)["weights"]


def run_optimum(model_dir: Path, task: str, work_dir: Path, opset: int | None) -> None:
    """optimum's export into ``work_dir`` (its own validation off: see the module notes)."""
    main_export = import_optional("optimum.exporters.onnx", "main_export", "optimum-onnx", "hf")

    with quiet_library("optimum"):   # tracer warnings, progress prints, its notes
        main_export(str(model_dir), output=work_dir, task=task, opset=opset, device="cpu",
                    library_name="transformers", local_files_only=True, do_validation=False)


def _load_torch_model(model_dir: Path, task: str):
    name = {"feature-extraction": "AutoModel", "text-classification":
            "AutoModelForSequenceClassification", DECODER_TASK: "AutoModelForCausalLM"}[task]
    auto = import_optional("transformers", name, "transformers", "hf")
    return auto.from_pretrained(str(model_dir), local_files_only=True).eval()


def token_feeds(session, vocab_size: int, batch: int, length: int, seed: int) -> dict:
    """Random token ids with a padded attention mask (row i has i padding tokens)."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for inp in session.get_inputs():
        if inp.name == "input_ids":
            feeds[inp.name] = rng.integers(1, vocab_size, size=(batch, length), dtype=np.int64)
        elif inp.name == "attention_mask":
            mask = np.ones((batch, length), dtype=np.int64)
            for row in range(1, batch):
                mask[row, length - min(row, length - 1):] = 0
            feeds[inp.name] = mask
        elif inp.name == "token_type_ids":
            feeds[inp.name] = np.zeros((batch, length), dtype=np.int64)
        else:
            raise ValueError(f"the exported model takes an input {inp.name!r}; parity checks "
                             "know input_ids, attention_mask and token_type_ids")
    return feeds


def _torch_outputs(model, feeds: dict) -> dict:
    import torch

    if model is None:
        return {}
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v) for k, v in feeds.items()})
    return {name: out[name].double().numpy() for name in out.keys()}


def check_hf_parity(model, onnx_path: Path, multiple: float = PARITY_MULTIPLE) -> dict:
    """Compare the torch model (float64 and float32) with ONNX Runtime on padded token ids,
    output by output, by the rule of :mod:`edgepack.export.parity`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    twin, why = float64_twin(model)
    reference_model, torch_model = (twin, model) if twin is not None else (model, None)
    results = []
    for seed, (batch, length) in enumerate(PARITY_CASES):
        feeds = token_feeds(session, model.config.vocab_size, batch, length, seed)
        reference = _torch_outputs(reference_model, feeds)
        mine = _torch_outputs(torch_model, feeds)
        for name, actual in zip(names, session.run(None, feeds)):
            results.append(judge_output(name, reference[name], mine.get(name), actual,
                                        multiple=multiple, batch=batch,
                                        label=f"batch {batch}, length {length}"))
    return reference_summary(results, multiple, "torch float64" if twin is not None
                             else f"torch float32 ({why})")


def _build_graph(model_dir: Path, task: str, work_dir: Path, opset, builder) -> None:
    """An encoder: optimum's export; a decoder: the graph builder chosen for it."""
    if builder is None:
        run_optimum(model_dir, task, work_dir, opset)
    else:
        builder.build(model_dir, work_dir, opset)


def decoder_graph(model_dir: Path, task: str, graph: str):
    """(the decoder graph builder, why it was chosen) for a decoder; (None, "") otherwise."""
    from edgepack.export.decoder_graphs import AUTO, choose_graph

    if task != DECODER_TASK:
        if graph != AUTO:
            raise ValueError(f"graph {graph!r} applies to task {DECODER_TASK}, not {task}")
        return None, ""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return choose_graph(graph, str(config.get("model_type", "")))


def _export_into(model_dir: Path, task: str, out_dir: Path, opset, multiple: float,
                 fail_on_mismatch: bool, builder=None):
    """The export in a scratch folder inside ``out_dir``, marked, parity-checked, then
    moved into place (the model last); returns the graph, the parity record and the tied
    embedding copies removed."""
    work_dir = Path(tempfile.mkdtemp(prefix=".hf-export.", dir=out_dir))
    try:
        _build_graph(model_dir, task, work_dir, opset, builder)
        model = _load_torch_model(model_dir, task)
        shared = share_tied_embedding(work_dir / "model.onnx", model)
        mark_onnx_file(work_dir / "model.onnx", f"export --hf ({task})")
        graph = check_onnx_file(work_dir / "model.onnx")
        check = check_decoder_parity if task == DECODER_TASK else check_hf_parity
        parity = check(model, work_dir / "model.onnx", multiple)
        if not parity["ok"] and fail_on_mismatch:
            raise parity_failure(parity)
        for item in sorted(work_dir.iterdir(), key=lambda p: p.name == "model.onnx"):
            os.replace(item, out_dir / item.name)  # config and data first, model last
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return graph, parity, shared


def export_hf(model_dir, task: str, out_dir, opset: int | None = None,
              parity_multiple: float = PARITY_MULTIPLE,
              fail_on_mismatch: bool = True, graph: str = "auto") -> StageResult:
    """Export a local transformers model for ``task`` to ``out_dir/model.onnx``; check it.

    ``out_dir`` also gets the config and tokenizer files optimum copies beside the model (a
    decoder: ``genai_config.json`` too). Raises :class:`ParityError` when ONNX Runtime's
    error exceeds ``parity_multiple`` times torch's own float32 error (:mod:`edgepack.export.parity`),
    unless ``fail_on_mismatch`` is off: then the record says ``parity.ok = False``.
    ``graph``: how a decoder's graph is built (:mod:`edgepack.export.decoder_graphs`).
    """
    task = normalize_task(task)
    model_dir, weights = checked_model_dir(model_dir)
    builder, why = decoder_graph(model_dir, task, graph)
    if same_file(out_dir, model_dir):
        raise ValueError(f"output folder {out_dir} is the model folder; choose another one")
    out_dir = check_output_folder(out_dir, is_own=lambda folder: written_by_edgepack(
        folder / "model.onnx"), what="an earlier edgepack export (its model.onnx)")
    with output_folder(out_dir):
        onnx_graph, parity, shared = _export_into(model_dir, task, out_dir, opset,
                                                  parity_multiple, fail_on_mismatch, builder)
    model_path = out_dir / "model.onnx"
    deploy = _deploy_files(model_path, model_dir) if task == DECODER_TASK else None
    record = {"exporter": "optimum", "task": task, "source": str(model_dir), "weights": weights,
              "opset": max(d.version for d in onnx_graph.opset_import
                           if d.domain in ("", "ai.onnx")),
              "params": parameter_count(onnx_graph), "size_bytes": model_size_bytes(model_path),
              "parity": parity, "tied_embedding_copies_removed": shared}
    if builder is not None:
        record["graph"] = {"name": builder.name, "builder": builder.note, "why": why,
                           "nodes": len(onnx_graph.graph.node)}
        record["exporter"] = builder.library
    if deploy is not None:
        record["deploy_files"] = deploy
    return StageResult(artifact=model_path, record=record)


def _deploy_files(model_path: Path, model_dir: Path) -> list[str]:
    """genai_config.json and the tokenizer beside a decoder, when the model folder has a
    tokenizer (onnxruntime-genai needs both); nothing otherwise."""
    from edgepack.export.genai import write_deploy_files

    if not (model_dir / "tokenizer.json").is_file():
        return []
    return write_deploy_files(model_path, model_dir)
