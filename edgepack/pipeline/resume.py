"""``--resume``: which stages an earlier run finished, and what an unfinished one left.

Each stage folder gets ``config.json`` when the stage starts, its artifact, and
``record.json`` last (with the artifact's sha256 and the config version). A stage is reused
only when its record, config, config version and artifact hash all agree; anything else in
its folder is cleared and the stage is redone, except a training checkpoint made with the
same config, from which training continues.

Before any stage is looked at, the run as a whole is checked: a resumed run must be made from
the same recipe, files and teacher as the folder's record says
(:mod:`edgepack.pipeline.run_inputs`), and no other process may be writing the folder
(:mod:`edgepack.pipeline.run_lock`).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from edgepack.core.files import atomic_write_json, sha256_file
from edgepack.core.stage import StageConfig, spec_for
from edgepack.pipeline.measure import METRIC_KEYS, Artifact, PipelineContext, export_for_bench

RECORD = "record.json"
CHECKPOINT = "checkpoint.pt"   # a training stage's per-epoch checkpoint, for --resume
STAGE_CONFIG = "config.json"   # the config a stage was started with


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def load_done_stage(folder: Path, config: StageConfig, ctx: PipelineContext):
    """A finished stage from an earlier run: its record and artifact, if they agree."""
    record = read_json(folder / RECORD)
    if not isinstance(record, dict):
        return None
    if record.get("config_version") != config.version:
        ctx.log(f"[{folder.name}] made with config version {record.get('config_version')}, "
                f"this edgepack writes {config.version}: running it again")
        return None
    artifact = ctx.out_dir / record.get("artifact", "")
    if record.get("config") != config.to_dict() or not artifact.is_file() or \
            sha256_file(artifact) != record.get("sha256"):
        return None
    return record, artifact


def clear_unfinished(folder: Path, config: StageConfig, resume: bool) -> None:
    """Remove what an unfinished earlier attempt left.

    On ``--resume`` a training checkpoint is kept when it was made with the same stage config
    (``config.json``, written when the stage starts), so training continues where it stopped.
    """
    folder.mkdir(parents=True, exist_ok=True)
    started_with = folder / STAGE_CONFIG
    same_config = started_with.is_file() and read_json(started_with) == config.to_dict()
    for item in folder.iterdir():
        if resume and same_config and item.name in (CHECKPOINT, STAGE_CONFIG):
            continue
        shutil.rmtree(item) if item.is_dir() else item.unlink()
    atomic_write_json(started_with, config.to_dict())


def reuse_stage(ctx: PipelineContext, name: str, config: StageConfig, given, source: Artifact,
                record: dict, path: Path) -> tuple[dict, Artifact]:
    """A stage finished by an earlier run: its entry, and its artifact rebuilt from disk."""
    ctx.log(f"[{name}] done in an earlier run; reusing {path.name}")
    spec = spec_for(config)
    if spec.produces == "package":
        return record, source
    module = spec.rebuild(config, given, path) if spec.produces == "torch" else None
    onnx_path = path if module is None else export_for_bench(ctx, module, name)
    metrics = {k: record[k] for k in METRIC_KEYS if k in record}
    return record, Artifact(name, module, onnx_path, path, metrics,
                            source.source_module if module is None else None)
