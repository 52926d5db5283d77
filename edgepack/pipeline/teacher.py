"""The model to compress: built, then loaded from weights or trained once and cached.

A trained teacher is cached under ``~/.cache/edgepack/teachers/<key>/`` (``$XDG_CACHE_HOME``
honoured), keyed by a hash of everything that decides its weights: builder, arguments,
epochs, learning rate, data provider and its arguments, seed. The entry holds the weights
and a manifest of their sha256, checked before each use (:mod:`edgepack.core.cache_entry`); weights
holding NaN or Inf are never cached. Training writes a checkpoint each epoch, so a killed
first run resumes where it stopped.

Under torchrun the teacher is prepared by rank 0 alone, exactly as a one-process run prepares
it (so both share the cache); the other ranks build the same architecture and receive rank
0's weights over the process group when the pipeline starts (:mod:`edgepack.pipeline.distributed`),
so no shared filesystem is needed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from edgepack.core.cache_entry import new_entry, open_entry
from edgepack.core.errors import BadInput, CheckFailed
from edgepack.core.pickle_guard import UnpicklingRefused
from edgepack.compress.distill import augment_inputs
from edgepack.compress.private import DPConfig, train_private
from edgepack.compress.trainer import TrainConfig, cross_entropy_loss, fit, selection_batches
from edgepack.pipeline.recipe import DataSpec, ModelSpec
from edgepack.pipeline.user_code import import_object, user_code
from edgepack.core.files import cache_dir  # noqa: F401 - where callers have found it
from edgepack.export.weights import load_weights, save_weights

TRAINING_VERSION = 3  # bump when the training procedure changes, to retire old caches
CACHED_WEIGHTS = "model.safetensors"   # inside the entry folder teachers/<key>/


def build_model(build: str, args: dict, base_dir: Path | None) -> nn.Module:
    """Call the ``module:function`` builder with ``args``; it must return an nn.Module."""
    builder = import_object(build, base_dir, what="model builder")
    try:
        with user_code(f"model builder {build!r}"):
            model = builder(**args)
    except UnpicklingRefused:
        raise
    except TypeError as exc:
        raise BadInput(f"model builder {build!r} rejected args {args}: {exc}") from exc
    except Exception as exc:  # the builder is the user's code: its failure is theirs to fix
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        raise BadInput(f"model builder {build!r} raised {type(exc).__name__}: {text}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"model builder {build!r} returned {type(model).__name__}, "
                         "expected a torch.nn.Module")
    return model


def teacher_key(model: ModelSpec, data: DataSpec, seed: int) -> str:
    """A short hash of everything that decides the trained weights."""
    decided = {"build": model.build, "args": model.args, "epochs": model.train_epochs,
               "lr": model.lr, "data": data.provider, "data_args": data.args,
               "seed": seed, "version": TRAINING_VERSION}
    if model.augment != "none":  # (absent when off, so teachers cached before it still match)
        decided["augment"] = model.augment
    if model.dp:
        decided["dp"] = DPConfig(**model.dp).to_dict()
    blob = json.dumps(decided, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def augmented_loss(augment: str):
    """Cross-entropy on inputs perturbed afresh each step (``"none"``: the inputs as given).

    A teacher that has seen its inputs shifted or noised generalises better from the same
    labelled set, and distillation hands that on to the student.
    """
    if augment == "none":
        return cross_entropy_loss

    def loss(model: nn.Module, batch):
        inputs, labels = batch
        return cross_entropy_loss(model, (augment_inputs(inputs, augment), labels))

    return loss


def prepare_teacher(model: ModelSpec, data_spec: DataSpec, data: dict, seed: int,
                    base_dir: Path | None, log: Callable[[str], None] = print,
                    progress: bool = True, use_cache: bool = True) -> nn.Module:
    """Build the model and give it weights: from a file, the cache, or by training it."""
    return prepare_teacher_with_record(model, data_spec, data, seed, base_dir, log, progress,
                                       use_cache)[0]


def prepare_teacher_with_record(model: ModelSpec, data_spec: DataSpec, data: dict, seed: int,
                                base_dir: Path | None, log: Callable[[str], None] = print,
                                progress: bool = True, use_cache: bool = True
                                ) -> tuple[nn.Module, dict | None]:
    """:func:`prepare_teacher`, and the DP-SGD record of a teacher trained with ``[model.dp]``
    (None otherwise): the (epsilon, delta) it spent, kept with the cached weights."""
    torch.manual_seed(seed)
    net = build_model(model.build, model.args, base_dir)
    if model.weights:
        weights = Path(model.weights)
        if not weights.is_absolute() and base_dir is not None:
            weights = base_dir / weights
        load_weights(net, weights)
        return net.eval(), None
    if model.train_epochs <= 0:
        log("model: no weights file and train_epochs = 0; compressing the model as its "
            "builder made it (pretrained if the builder loads weights)")
        return net.eval(), None
    key = teacher_key(model, data_spec, seed)
    record = train_cached(net, model, data["train"], data, seed, key, log, progress,
                          use_cache, desc="teacher")
    return net, record


def prepare_references(model: ModelSpec, data_spec: DataSpec, data: dict, seed: int,
                       base_dir: Path | None, count: int, log: Callable[[str], None] = print,
                       progress: bool = True) -> list[nn.Module]:
    """``count`` reference models for the LiRA attack: the teacher's architecture and
    training settings (DP-SGD too, if the teacher has it), each trained on its own set of
    the provider's ``"references"`` list and cached like the teacher."""
    found = []
    for index in range(count):
        torch.manual_seed(seed + 1 + index)
        net = build_model(model.build, model.args, base_dir)
        key = f"{teacher_key(model, data_spec, seed)}-reference{index}"
        train_cached(net, model, data["references"][index], data, seed + 1 + index, key, log,
                     progress, desc=f"reference {index + 1}/{count}")
        found.append(net)
    return found


def train_cached(net: nn.Module, model: ModelSpec, train_batches, data: dict, seed: int,
                 key: str, log: Callable[[str], None], progress: bool, use_cache: bool = True,
                 desc: str = "teacher") -> dict | None:
    """Train ``net`` as ``model`` says (DP-SGD when it has ``dp``), or load it from the cache
    entry ``key``; return the DP-SGD record (None without ``dp``).

    The entry is a folder verified against its manifest before use (:mod:`edgepack.core.cache_entry`):
    a truncated, swapped or half-made one is trained again, with one line on stderr. A
    teacher whose trained weights hold NaN or Inf is refused and never cached."""
    entry = cache_dir() / "teachers" / key
    source = {"teacher": key, "training_version": TRAINING_VERSION}
    if use_cache and open_entry(entry, source, f"trained weights ({desc})") is not None:
        try:
            record = _load_cached(net, entry / CACHED_WEIGHTS, bool(model.dp))
            log(f"model: trained weights ({desc}) from cache {entry}")
            return record
        except ValueError:
            log(f"model: cache entry {entry} is damaged; training again")
    log(f"model: training {model.build} ({desc}) for {model.train_epochs} epochs"
        f"{' with DP-SGD' if model.dp else ''} (cached afterwards)")
    entry.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"build": model.build, "args": json.dumps(model.args)}
    record = None
    if model.dp:
        augment = None if model.augment == "none" else \
            (lambda inputs: augment_inputs(inputs, model.augment))
        record = train_private(net, train_batches, model.train_epochs, model.lr,
                               DPConfig(**model.dp), augment=augment, log=log)
        metadata["dp_record"] = json.dumps(record)
    else:
        checkpoint = entry.parent / f"{key}.checkpoint.pt"
        fit(net, train_batches, TrainConfig(epochs=model.train_epochs, lr=model.lr, seed=seed,
                                            progress=progress, distributed=False),
            loss_fn=augmented_loss(model.augment), eval_batches=selection_batches(data),
            checkpoint=checkpoint, resume=True, desc=desc)
        checkpoint.unlink(missing_ok=True)
    check_trained_finite(net, desc)
    with new_entry(entry, source) as scratch:
        save_weights(net, scratch / CACHED_WEIGHTS, metadata=metadata)
    return record


def check_trained_finite(net: nn.Module, desc: str) -> None:
    """Refuse (exit 1) trained weights holding NaN or Inf: training diverged, and such a
    model must neither go on through the pipeline nor be cached for later runs."""
    for name, tensor in net.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckFailed(f"model: training the {desc} diverged: its tensor {name!r} holds "
                              "NaN or Inf after training (lower [model] lr, or check the "
                              "data); nothing was cached")


def _load_cached(net: nn.Module, path: Path, dp: bool) -> dict | None:
    """Load a verified entry's weights; return its DP-SGD record when ``dp`` (None
    without); ValueError when the weights or the record cannot be used."""
    load_weights(net, path)
    record = _cached_record(path) if dp else None
    if dp and record is None:
        raise ValueError(f"{path}: no DP-SGD record beside the weights")
    return record


def _cached_record(path: Path) -> dict | None:
    """The DP-SGD record saved beside a cached teacher's weights (None if absent)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        text = (handle.metadata() or {}).get("dp_record")
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None
