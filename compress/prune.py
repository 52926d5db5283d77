"""Magnitude pruning: unstructured (masks, for size) and structured (channels, for speed).

*Structured* pruning removes whole channels. Removing output channel ``k`` of a conv also
removes input channel ``k`` of every layer that reads it (and the matching batch-norm
entries, and the slice of a flattened linear layer). torch-pruning's dependency graph
(DepGraph) finds these coupled groups by tracing the model once; each group is ranked by its
L2 weight magnitude and the weakest are cut, so the result is a smaller dense model that
runs faster everywhere. The classifier head is never pruned (its outputs are the classes).

*Unstructured* pruning zeroes individual weights (L1 magnitude), globally or per layer,
optionally over several steps on Zhu & Gupta's cubic schedule with fine-tuning between them.
The zeros make the file compress well, but dense kernels do not run faster: the record says
so, and the pipeline does not expect a speed-up from it.

Attention modules (timm-style fused ``qkv``, separate q/k/v projections, Hugging Face
self-attention, ``nn.MultiheadAttention``) are found and torch-pruning is told their heads,
so whole heads are removed (``head_ratio``, by default the same as ``ratio``) and the modules'
head counts are updated; bare parameters (class token, position embedding, layer scale) are
pruned with their channels. Hugging Face models keep their hidden size (their config fixes
it): heads and FFN width are pruned. See :mod:`edgepack.compress.prune_plan`.

Fine-tuning after each step uses the same trainer as distillation; given the teacher it
learns from its soft targets too (``kd_alpha``, ``kd_temperature``), optionally on extra
teacher-labelled transfer inputs -- pruning plus KD recovers more accuracy than either.
A model torch-pruning cannot follow (a reshape that mixes channels, a bare parameter) is
caught by running it after each step: the error names the layer to add to
``ignored_layers`` -- and every layer in the same place of the same kind of module (all
twelve blocks of a ViT), so one retry is enough (:mod:`edgepack.compress.prune_trace`).
"""

from __future__ import annotations

import copy
import io
import time
import zipfile
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune
from torch.utils.data import DataLoader, TensorDataset

from edgepack.core.checks import check_budget, check_choice, check_finite_fields, check_range
from edgepack.core.stage import StageConfig, StageInput, StageResult, StageSpec, register_stage
from edgepack.export.outputs import first_tensor
from edgepack.compress.adversarial import (AdversarialLoss, adversarial_config,
                                           clean_target_columns, defence_record, epoch_score,
                                           with_defence)
from edgepack.compress.kd import NO_LABEL, collect, kd_loss
from edgepack.compress.attention import update_head_counts
from edgepack.compress.parallel import Distributed, moved_to
from edgepack.compress.prune_plan import params_by_kind, pruning_plan
from edgepack.compress.prune_trace import UntraceableModelError, check_still_runs, trace_error
from edgepack.compress.trainer import (TrainConfig, accuracy, cross_entropy_loss, fit,
                                       selection_batches)

METHODS = ("structured", "unstructured")
SCOPES = ("global", "layer")


@dataclass
class PruneConfig(StageConfig):
    """What to prune, how much, and how to recover accuracy afterwards."""

    kind = "prune"
    version = 2  # 2: heads are pruned at ``ratio`` unless head_ratio says otherwise
    method: str = "structured"
    ratio: float = 0.5
    scope: str = "layer"             # "global": rank all layers together
    round_to: int = 0                # keep channel counts multiples of this (8 suits SIMD)
    iterative_steps: int = 1
    finetune_epochs: int = 0
    lr: float = 1e-2
    kd_alpha: float = 0.9            # with a teacher: weight of its soft targets in fine-tuning
    kd_temperature: float = 4.0
    finetune_transfer_samples: int = 0   # teacher-labelled transfer inputs added to fine-tuning
    finetune_labelled: bool = True   # false: fine-tune on the transfer inputs alone (with KD)
    head_ratio: float | None = None  # share of attention heads removed (None: ratio)
    ignored_layers: tuple[str, ...] = ()   # module names never pruned (the head is found)
    seed: int = 0
    tolerance: float | None = None   # overrides the recipe's tolerance for this stage
    require_faster: bool | None = None   # None: True for structured, False for unstructured
    adversarial: dict = field(default_factory=dict)   # {eps, steps, ratio, loss, beta}: PGD

    def __post_init__(self):
        check_finite_fields(self, "prune")
        adversarial_config(self.adversarial, "prune")
        check_choice("prune", "method", self.method, METHODS)
        check_choice("prune", "scope", self.scope, SCOPES)
        check_range("prune", "ratio", self.ratio, 0.0, 1.0)
        if self.iterative_steps < 1:
            raise ValueError(f"prune.iterative_steps must be >= 1, got {self.iterative_steps}")
        for name, unit in (("finetune_epochs", "epochs"), ("iterative_steps", "steps"),
                           ("round_to", "steps"), ("finetune_transfer_samples", "samples")):
            check_budget("prune", name, getattr(self, name), unit)
        if self.lr <= 0 or self.kd_temperature <= 0:
            raise ValueError("prune.lr and prune.kd_temperature must be > 0")
        check_range("prune", "kd_alpha", self.kd_alpha, 0.0, 1.0, high_inclusive=True)
        if self.head_ratio is not None:
            check_range("prune", "head_ratio", self.head_ratio, 0.0, 1.0)
        if not self.finetune_labelled and self.finetune_epochs and \
                not self.finetune_transfer_samples:
            raise ValueError("prune.finetune_labelled = false fine-tunes on the transfer set "
                             "alone: set finetune_transfer_samples > 0")

    @property
    def expects_speedup(self) -> bool:
        if self.require_faster is not None:
            return self.require_faster
        return self.method == "structured"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def cubic_schedule(final: float, steps: int) -> list[float]:
    """Sparsity after each step, Zhu & Gupta 2017: s_t = s_f (1 - (1 - t/n)^3)."""
    return [final * (1 - (1 - t / steps) ** 3) for t in range(1, steps + 1)]


def find_head(model: nn.Module, example_inputs) -> list[str]:
    """Names of the layers whose outputs are the model's outputs (never pruned)."""
    with torch.no_grad():
        out = model(*example_inputs) if isinstance(example_inputs, tuple) else model(example_inputs)
    width = first_tensor(out).shape[-1]
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and module.out_features == width:
            last = name
        elif isinstance(module, nn.modules.conv._ConvNd) and module.out_channels == width:
            last = name
    return [last] if last else []


def _modules_by_name(model: nn.Module, names) -> list[nn.Module]:
    table = dict(model.named_modules())
    missing = [n for n in names if n not in table]
    if missing:
        from edgepack.core.checks import did_you_mean

        raise ValueError(f"prune.ignored_layers: no layer named {missing[0]!r} in the model"
                         f"{did_you_mean(missing[0], table)}")
    return [table[n] for n in names]


def epochs_per_step(total: int, steps: int) -> list[int]:
    """Split ``total`` fine-tuning epochs over ``steps`` pruning steps, the rest to the last."""
    if total == 0:
        return [0] * steps
    base = total // steps
    split = [base] * steps
    split[-1] += total - base * steps
    return split


def finetune_batches(config: PruneConfig, data: dict, teacher) -> DataLoader:
    """The labelled training set, plus teacher-labelled transfer inputs when asked for
    (``finetune_labelled = false``: the transfer inputs alone)."""
    inputs, labels = collect(data["train"])
    if not config.finetune_labelled:
        inputs, labels = inputs[:0], labels[:0]
    elif inputs is None or len(inputs) == 0:
        raise ValueError("prune: the training data for fine-tuning is empty (0 samples)")
    if config.finetune_transfer_samples:
        if teacher is None:
            raise ValueError("prune.finetune_transfer_samples > 0 needs a teacher: unlabelled "
                             "inputs are only useful with its soft targets")
        if data.get("transfer") is None:
            raise ValueError("prune.finetune_transfer_samples > 0 but the data provider gives "
                             "no 'transfer' set")
        extra, _ = collect(data["transfer"], config.finetune_transfer_samples, labelled=False)
        inputs = torch.cat([inputs, extra])
        labels = torch.cat([labels, torch.full((len(extra),), NO_LABEL, dtype=labels.dtype)])
    batch_size = getattr(data["train"], "batch_size", None) or 128
    columns = clean_target_columns(inputs, labels, teacher, config.adversarial)
    return DataLoader(TensorDataset(*columns), batch_size=batch_size, shuffle=True)


def _kd_loss_fn(teacher: nn.Module, config: PruneConfig):
    """Fine-tuning loss with the teacher's soft targets (pruning plus KD recovers more)."""
    teacher.eval()

    def loss_fn(model, batch):
        inputs, *clean_targets, labels = batch   # see clean_target_columns
        logits = model(inputs)
        with torch.no_grad():
            targets = clean_targets[0] if clean_targets else teacher(inputs)
        return kd_loss(logits, targets, labels, config.kd_temperature, config.kd_alpha), \
            logits, labels
    return loss_fn


def _finetune(model, config: PruneConfig, data, teacher, epochs: int, desc: str,
              progress: bool = True) -> dict | None:
    """Recover accuracy after a pruning step with the shared trainer (adversarially when
    ``config.adversarial`` asks: then the history carries the defence's record)."""
    if not epochs or not data or data.get("train") is None:
        return None
    loss_fn = cross_entropy_loss if teacher is None else _kd_loss_fn(teacher, config)
    batches = finetune_batches(config, data, teacher)
    loss_fn = with_defence(loss_fn, config.adversarial, "prune", batches.dataset.tensors[0])
    started = time.perf_counter()
    with moved_to(teacher, Distributed().device):  # the loss runs it beside the model
        history = fit(model, batches,
                      TrainConfig(epochs=epochs, lr=config.lr, seed=config.seed, progress=progress),
                      loss_fn=loss_fn, eval_batches=selection_batches(data), desc=desc,
                      select=epoch_score(loss_fn, selection_batches(data)))
    if isinstance(loss_fn, AdversarialLoss):
        history["adversarial"] = defence_record(loss_fn, model, data.get("evaluation"),
                                                time.perf_counter() - started)
    return history


def structured_prune(model: nn.Module, config: PruneConfig, example_inputs, data=None,
                     teacher=None, progress: bool = True) -> dict:
    """Cut channels and attention heads with torch-pruning's DepGraph (group L2 magnitude);
    fine-tune between steps. What is pruned and kept: :func:`edgepack.compress.prune_plan.pruning_plan`.
    """
    import torch_pruning as tp

    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    ignored = _modules_by_name(model, tuple(config.ignored_layers) + tuple(
        n for n in find_head(model, example) if n not in config.ignored_layers))
    plan, sites, described = pruning_plan(model, config, ignored)
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    kinds_before = params_by_kind(model, sites)
    attention_before = [site.describe() for site in sites]
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=config.scope == "global", pruning_ratio=config.ratio,
            iterative_steps=config.iterative_steps, round_to=config.round_to or None, **plan)
    except Exception as exc:
        raise UntraceableModelError(trace_error(model, exc)) from exc
    with torch.no_grad():
        output_shape = tuple(first_tensor(model(*example)).shape)
    steps = []
    for step, epochs in enumerate(epochs_per_step(config.finetune_epochs,
                                                  config.iterative_steps)):
        try:
            pruner.step()
        except Exception as exc:  # torch-pruning fails inside on graphs it misread
            raise UntraceableModelError(trace_error(model, exc)) from exc
        update_head_counts(sites, pruner)
        check_still_runs(model, example, output_shape)
        steps.append(_step_record(model, config, data, teacher, step, epochs, progress))
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    widths = {n: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
              for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    record = {"params_before": int(params_before), "params_after": int(params_after),
              "params_by_kind": {"before": kinds_before, "after": params_by_kind(model, sites)},
              "macs_before": int(macs_before), "macs_after": int(macs_after),
              "macs_ratio": float(macs_before) / max(float(macs_after), 1.0),
              **described,
              "ignored_layers": [n for n, m in model.named_modules() if m in ignored],
              "layer_widths": widths, "steps": steps}
    if sites:
        record["attention"] = [{**before, "heads_after": site.heads,
                                "head_dim_after": site.head_dim}
                               for before, site in zip(attention_before, sites)]
        record["attention_heads_before"] = [a["heads"] for a in attention_before]
        record["attention_heads_after"] = [site.heads for site in sites]
    return record


def _step_record(model, config, data, teacher, step: int, epochs: int, progress: bool) -> dict:
    """Fine-tune after one pruning step; what the step left behind."""
    record = {"step": step + 1, "params": count_params(model)}
    if data and data.get("evaluation") is not None:
        record["accuracy_before_finetune"] = accuracy(model, data["evaluation"])
    history = _finetune(model, config, data, teacher, epochs,
                        f"prune finetune {step + 1}/{config.iterative_steps}", progress)
    if history is not None:
        record.update(finetune_epochs=epochs, accuracy_after_finetune=history["best_metric"])
        if "adversarial" in history:
            record["adversarial"] = history["adversarial"]
    return record


def _prunable(model: nn.Module, ignored: list[str]) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for n, m in model.named_modules()
            if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd)) and n not in ignored]


def layer_sparsity(model: nn.Module) -> dict[str, float]:
    """Fraction of exact zeros in each conv/linear weight."""
    return {n: float((m.weight == 0).float().mean())
            for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))}


def zipped_size(model: nn.Module) -> int:
    """Bytes of the state dict after zip (deflate): what zeros buy on disk."""
    raw = io.BytesIO()
    for name, tensor in model.state_dict().items():
        raw.write(name.encode())
        raw.write(tensor.detach().cpu().contiguous().numpy().tobytes())
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("weights", raw.getvalue())
    return len(out.getvalue())


def unstructured_prune(model: nn.Module, config: PruneConfig, example_inputs, data=None,
                       teacher=None, progress: bool = True) -> dict:
    """Zero the smallest weights (L1) on a cubic schedule; make the masks permanent."""
    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    ignored = list(config.ignored_layers) + find_head(model, example)
    _modules_by_name(model, config.ignored_layers)
    targets = _prunable(model, ignored)
    size_before = zipped_size(model)
    schedule = cubic_schedule(config.ratio, config.iterative_steps)
    epochs = epochs_per_step(config.finetune_epochs, config.iterative_steps)
    done, steps = 0.0, []
    for step, sparsity in enumerate(schedule):
        # torch's prune amounts apply to the weights still alive: convert the schedule.
        amount = (sparsity - done) / (1 - done) if done < 1 else 0.0
        if config.scope == "global":
            torch_prune.global_unstructured(targets, torch_prune.L1Unstructured, amount=amount)
        else:
            for module, name in targets:
                torch_prune.l1_unstructured(module, name, amount=amount)
        done = sparsity
        steps.append(_step_record(model, config, data, teacher, step, epochs[step], progress))
    for module, name in targets:
        if torch_prune.is_pruned(module):
            torch_prune.remove(module, name)  # masks become plain zeros before export
    return {"params_before": count_params(model), "params_after": count_params(model),
            "nonzero_params": int(sum((p != 0).sum() for p in model.parameters())),
            "schedule": schedule, "layer_sparsity": layer_sparsity(model),
            "zip_bytes_before": size_before, "zip_bytes_after": zipped_size(model), "steps": steps,
            "note": "unstructured sparsity shrinks the compressed file; dense kernels do not "
                    "run faster"}


def prune(model: nn.Module, config: PruneConfig, example_inputs, data: dict | None = None,
          teacher: nn.Module | None = None, progress: bool = True) -> StageResult:
    """Prune ``model`` in place; fine-tune on ``data["train"]`` (with KD when given a teacher)."""
    method = structured_prune if config.method == "structured" else unstructured_prune
    record = {"method": config.method, "ratio": config.ratio, "scope": config.scope,
              **method(model, config, example_inputs, data, teacher, progress)}
    if data and data.get("evaluation") is not None:
        record["accuracy_after_finetune"] = accuracy(model, data["evaluation"])
    defended = [s["adversarial"] for s in record.get("steps", []) if "adversarial" in s]
    if defended:  # cost over every step, effect after the last
        record["adversarial"] = {**defended[-1], **{
            k: round(sum(d[k] for d in defended), 3) for k in ("craft_seconds", "train_seconds")}}
    model.eval()
    return StageResult(artifact=model, record=record)


# --------------------------------------------------------------------------- as a pipeline stage


def _run_stage(config: PruneConfig, given: StageInput) -> StageResult:
    return prune(copy.deepcopy(given.artifact), config, given.example_inputs, data=given.data,
                 teacher=given.teacher, progress=given.progress)


def _rebuild(config: PruneConfig, given: StageInput, weights) -> nn.Module:
    """A copy of the stage's input; loading the weights narrows the pruned layers."""
    from edgepack.export.weights import load_weights

    return load_weights(copy.deepcopy(given.artifact), weights).eval()


def _slow_cause(config: PruneConfig, candidate) -> str:
    return ("likely cause: the model is too small for fewer channels to matter, or the "
            "runtime's fixed per-call overhead dominates")


register_stage(StageSpec("prune", PruneConfig, consumes="torch", produces="torch",
                         run=_run_stage, rebuild=_rebuild, slow_cause=_slow_cause,
                         promises_speed=lambda config: config.expects_speedup))
