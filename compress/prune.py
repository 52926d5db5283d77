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
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from compress.stage import StageConfig, StageResult, check_choice, check_range
from compress.trainer import TrainConfig, accuracy, cross_entropy_loss, fit

METHODS = ("structured", "unstructured")
SCOPES = ("global", "layer")


class UntraceableModelError(ValueError):
    """torch-pruning could not trace the model (bad input: exit code 2)."""


@dataclass
class PruneConfig(StageConfig):
    """What to prune, how much, and how to recover accuracy afterwards."""

    kind = "prune"
    method: str = "structured"
    ratio: float = 0.5
    scope: str = "layer"             # "global": rank all layers together
    round_to: int = 0                # keep channel counts multiples of this (8 suits SIMD)
    iterative_steps: int = 1
    finetune_epochs: int = 0
    lr: float = 3e-3
    ignored_layers: tuple[str, ...] = ()   # module names never pruned (the head is found)
    seed: int = 0
    tolerance: float | None = None   # overrides the recipe's tolerance for this stage
    require_faster: bool | None = None   # None: True for structured, False for unstructured

    def __post_init__(self):
        check_choice("prune", "method", self.method, METHODS)
        check_choice("prune", "scope", self.scope, SCOPES)
        check_range("prune", "ratio", self.ratio, 0.0, 1.0)
        if self.iterative_steps < 1:
            raise ValueError(f"prune.iterative_steps must be >= 1, got {self.iterative_steps}")
        if self.round_to < 0 or self.finetune_epochs < 0:
            raise ValueError("prune.round_to and prune.finetune_epochs must be >= 0")

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
    width = out.shape[-1]
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
        from compress.stage import did_you_mean

        raise ValueError(f"prune.ignored_layers: no layer named {missing[0]!r} in the model"
                         f"{did_you_mean(missing[0], table)}")
    return [table[n] for n in names]


def _finetune(model, config: PruneConfig, data, teacher, epochs: int, desc: str,
              progress: bool = True) -> None:
    if not epochs or not data or data.get("train") is None:
        return
    loss_fn = cross_entropy_loss
    if teacher is not None:
        from compress.distill import kd_loss

        teacher.eval()

        def loss_fn(m, batch):  # noqa: F811 - pruning plus KD recovers more accuracy
            inputs, labels = batch
            logits = m(inputs)
            with torch.no_grad():
                targets = teacher(inputs)
            return kd_loss(logits, targets, labels, 4.0, 0.5), logits, labels
    fit(model, data["train"], TrainConfig(epochs=epochs, lr=config.lr, seed=config.seed,
                                          progress=progress),
        loss_fn=loss_fn, eval_batches=data.get("evaluation"), desc=desc)


def structured_prune(model: nn.Module, config: PruneConfig, example_inputs, data=None,
                     teacher=None, progress: bool = True) -> dict:
    """Cut channels with torch-pruning's DepGraph (group L2 magnitude); fine-tune between steps."""
    import torch_pruning as tp

    example = example_inputs if isinstance(example_inputs, tuple) else (example_inputs,)
    ignored = _modules_by_name(model, tuple(config.ignored_layers) + tuple(
        n for n in find_head(model, example) if n not in config.ignored_layers))
    macs_before, params_before = tp.utils.count_ops_and_params(model, example)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
            global_pruning=config.scope == "global", pruning_ratio=config.ratio,
            iterative_steps=config.iterative_steps, ignored_layers=ignored,
            round_to=config.round_to or None)
    except Exception as exc:
        raise UntraceableModelError(_trace_error(model, exc)) from exc
    steps = []
    for step in range(config.iterative_steps):
        pruner.step()
        per_step = max(1, config.finetune_epochs // config.iterative_steps) \
            if config.finetune_epochs else 0
        _finetune(model, config, data, teacher, per_step,
                  f"prune finetune {step + 1}/{config.iterative_steps}", progress)
        steps.append({"step": step + 1, "params": count_params(model)})
    macs_after, params_after = tp.utils.count_ops_and_params(model, example)
    widths = {n: m.out_channels if isinstance(m, nn.modules.conv._ConvNd) else m.out_features
              for n, m in model.named_modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))}
    return {"params_before": int(params_before), "params_after": int(params_after),
            "macs_before": int(macs_before), "macs_after": int(macs_after),
            "macs_ratio": float(macs_before) / max(float(macs_after), 1.0),
            "ignored_layers": [n for n, m in model.named_modules() if m in ignored],
            "layer_widths": widths, "steps": steps}


def _trace_error(model: nn.Module, exc: Exception) -> str:
    """Name the layer torch-pruning choked on, when the error lets us find it."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    culprit = next((n for n, m in model.named_modules()
                    if n and type(m).__name__ in text), None)
    hint = (f"; add {culprit!r} to prune.ignored_layers" if culprit else
            "; add the layer to prune.ignored_layers or use method='unstructured'")
    return f"torch-pruning cannot trace the model ({type(exc).__name__}: {text[:200]}){hint}"


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
    done = 0.0
    for step, sparsity in enumerate(schedule):
        # torch's prune amounts apply to the weights still alive: convert the schedule.
        amount = (sparsity - done) / (1 - done) if done < 1 else 0.0
        if config.scope == "global":
            torch_prune.global_unstructured(targets, torch_prune.L1Unstructured, amount=amount)
        else:
            for module, name in targets:
                torch_prune.l1_unstructured(module, name, amount=amount)
        done = sparsity
        per_step = max(1, config.finetune_epochs // config.iterative_steps) \
            if config.finetune_epochs else 0
        _finetune(model, config, data, teacher, per_step,
                  f"prune finetune {step + 1}/{config.iterative_steps}", progress)
    for module, name in targets:
        if torch_prune.is_pruned(module):
            torch_prune.remove(module, name)  # masks become plain zeros before export
    return {"params_before": count_params(model), "params_after": count_params(model),
            "nonzero_params": int(sum((p != 0).sum() for p in model.parameters())),
            "schedule": schedule, "layer_sparsity": layer_sparsity(model),
            "zip_bytes_before": size_before, "zip_bytes_after": zipped_size(model),
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
    model.eval()
    return StageResult(artifact=model, record=record)
