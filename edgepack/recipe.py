"""Recipes: the TOML a user writes, turned into checked configs (and back).

A recipe names the model (``module:function`` plus optional weights), the data provider,
the ordered stages and the bench settings. Every key is checked on load: an unknown key gets
a "did you mean" suggestion, a wrong type names the expected one, and the stage order is
checked (torch stages before ``export``, ``quantize`` after it), all before anything runs or
is written.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compress.distill import DistillConfig
from compress.prune import PruneConfig
from compress.quantize import QuantizeConfig
from bench.session import GRAPH_OPTIMIZATION_LEVELS
from core.checks import check_choice, checked_fields, did_you_mean
from core.stage import StageConfig
from export.torch_export import ExportConfig

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

STAGE_CONFIGS: dict[str, type[StageConfig]] = {
    "distill": DistillConfig, "prune": PruneConfig, "export": ExportConfig,
    "quantize": QuantizeConfig,
}
TORCH_STAGES = ("distill", "prune")
ONNX_STAGES = ("quantize",)


@dataclass
class ModelSpec:
    """The model to compress: a builder, its arguments, and weights or training."""

    build: str = "edgepack.zoo:mnist1d_cnn"
    args: dict = field(default_factory=dict)
    weights: str = ""
    train_epochs: int = 0
    lr: float = 1e-2


@dataclass
class DataSpec:
    """The data provider: ``module:function(**args)`` -> {"train", "calibration", ...}."""

    provider: str = "edgepack.zoo:mnist1d"
    args: dict = field(default_factory=dict)


@dataclass
class BenchSpec:
    """How every stage is benchmarked."""

    providers: tuple[str, ...] = ("cpu",)
    threads: int = 1
    inter_op_threads: int = 1
    spin_wait: bool = True           # false: threads sleep between runs (as on a phone)
    graph_optimization: str = "all"  # disable | basic | extended | all
    batch: int = 1
    warmup: int = 10
    min_runs: int = 100
    min_time_s: float = 0.5
    robustness_eps: tuple[float, ...] = (0.1,)   # FGSM/PGD budgets, in input standard deviations
    robustness_samples: int = 512                # evaluation samples attacked; 0 turns it off

    def to_dict(self) -> dict:
        """Plain TOML/JSON values (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}


@dataclass
class Recipe:
    """A whole pipeline, as data."""

    name: str
    model: ModelSpec
    data: DataSpec
    stages: list[StageConfig]
    bench: BenchSpec = field(default_factory=BenchSpec)
    seed: int = 0
    tolerance: float = 0.01
    base_dir: Path = field(default_factory=Path.cwd)

    def to_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "tolerance": self.tolerance,
                "model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                "stages": [s.to_dict() for s in self.stages],
                "bench": self.bench.to_dict()}


def _table(owner: str, cls, data: Any):
    """Build a small spec dataclass from a TOML table, checking keys and types."""
    if not isinstance(data, dict):
        raise ValueError(f"recipe [{owner}] must be a table, got {data!r}")
    return cls(**checked_fields(cls, data, f"recipe [{owner}]"))


def stage_from_dict(index: int, data: Any) -> StageConfig:
    """One ``[[stages]]`` entry -> its config, naming the entry in any error."""
    where = f"recipe stages[{index}]"
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a table, got {data!r}")
    kind = data.get("kind")
    if kind not in STAGE_CONFIGS:
        raise ValueError(f"{where}: unknown stage kind {kind!r}{did_you_mean(str(kind), STAGE_CONFIGS)};"
                         f" expected one of {', '.join(STAGE_CONFIGS)}")
    try:
        return STAGE_CONFIGS[kind].from_dict(data, where=f"{where} ({kind})")
    except TypeError as exc:
        raise ValueError(f"{where} ({kind}): {exc}") from exc


def check_stage_order(stages: list[StageConfig]) -> None:
    """torch stages come before export; ONNX stages need an export before them."""
    exported = False
    for i, stage in enumerate(stages):
        if stage.kind == "export":
            if exported:
                raise ValueError(f"recipe stages[{i}]: a second export stage; export once")
            exported = True
        elif stage.kind in TORCH_STAGES and exported:
            raise ValueError(f"recipe stages[{i}]: {stage.kind} works on the torch model and "
                             "must come before the export stage")
        elif stage.kind in ONNX_STAGES and not exported:
            raise ValueError(f"recipe stages[{i}]: {stage.kind} works on an ONNX model; put an "
                             "export stage before it")


TOP_LEVEL = ("name", "seed", "tolerance", "model", "data", "stages", "bench")


def recipe_from_dict(data: dict, base_dir: Path | None = None) -> Recipe:
    """Check a parsed recipe and build its configs."""
    unknown = [k for k in data if k not in TOP_LEVEL]
    if unknown:
        raise ValueError(f"recipe: unknown key {unknown[0]!r}{did_you_mean(unknown[0], TOP_LEVEL)};"
                         f" valid keys: {', '.join(TOP_LEVEL)}")
    for key, kind, label in (("name", str, "a string"), ("seed", int, "an integer")):
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise ValueError(f"recipe: {key} must be {label}, got {data[key]!r}")
    tolerance = data.get("tolerance", 0.01)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance < 0:
        raise ValueError(f"recipe: tolerance must be a number >= 0, got {tolerance!r}")
    if "model" not in data:
        raise ValueError("recipe: missing [model] table (build = 'module:function')")
    stages_raw = data.get("stages", [])
    if not isinstance(stages_raw, list):
        raise ValueError("recipe: stages must be an array of tables ([[stages]])")
    stages = [stage_from_dict(i, s) for i, s in enumerate(stages_raw)]
    check_stage_order(stages)
    bench = _table("bench", BenchSpec, data.get("bench", {}))
    if bench.threads < 0 or bench.inter_op_threads < 0 or bench.batch < 1:
        raise ValueError("recipe [bench]: threads must be >= 0 and batch >= 1")
    check_choice("recipe [bench]", "graph_optimization", bench.graph_optimization,
                 GRAPH_OPTIMIZATION_LEVELS)
    return Recipe(name=data.get("name", "recipe"), seed=data.get("seed", 0),
                  tolerance=float(tolerance), model=_table("model", ModelSpec, data["model"]),
                  data=_table("data", DataSpec, data.get("data", {})), stages=stages,
                  bench=bench, base_dir=base_dir or Path.cwd())


def load_recipe(path) -> Recipe:
    """Read and check a recipe file; errors name the file and the bad entry."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"recipe {path} does not exist")
    if not path.is_file():
        raise ValueError(f"recipe {path} is not a file")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"recipe {path} is not valid TOML: {exc}") from exc
    try:
        return recipe_from_dict(data, base_dir=path.resolve().parent)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} to TOML")


def to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML (``None`` values, TOML's missing value, are left out)."""
    data = recipe.to_dict()
    lines = [f"{k} = {_toml_value(data[k])}" for k in ("name", "seed", "tolerance")]
    for table in ("model", "data", "bench"):
        lines += ["", f"[{table}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in data[table].items() if v is not None]
    for stage in data["stages"]:
        lines += ["", "[[stages]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in stage.items() if v is not None]
    return "\n".join(lines) + "\n"


def import_object(spec: str, base_dir: Path | None = None, what: str = "object"):
    """Import ``module:function``, looking in the recipe's folder first."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"{what} {spec!r} must look like 'module:function'")
    added = False
    if base_dir is not None and str(base_dir) not in sys.path:
        sys.path.insert(0, str(base_dir))
        added = True
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ValueError(f"{what} {spec!r}: module {module_name!r} not found (looked in "
                         f"{base_dir or 'the Python path'} and the Python path)") from exc
    finally:
        if added:
            sys.path.remove(str(base_dir))
    try:
        return getattr(module, attr)
    except AttributeError as exc:
        names = [n for n in dir(module) if not n.startswith("_")]
        raise ValueError(f"{what} {spec!r}: module {module_name!r} has no {attr!r}"
                         f"{did_you_mean(attr, names)}") from exc
