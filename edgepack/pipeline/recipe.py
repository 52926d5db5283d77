"""Recipes: the TOML a user writes, turned into checked configs (and back).

A recipe names the model (``module:function`` plus optional weights), the data provider,
the ordered stages and the bench settings. Every key is checked on load: an unknown key gets
a "did you mean" suggestion, a wrong type names the expected one, and the stage order is
checked (torch stages before ``export``, ``quantize`` after it), all before anything runs or
is written.
The code a recipe names is refused or imported by :mod:`edgepack.pipeline.user_code`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.bench.privacy import PrivacyConfig
from edgepack.bench.robustness import RobustnessConfig
from edgepack.bench.runner import BenchConfig
from edgepack.compress.distill import AUGMENTATIONS
from edgepack.core.checks import (check_budget, check_choice, check_finite_fields, checked_fields,
                                  did_you_mean, is_finite_number)
from edgepack.core.stage import StageConfig, spec_for, stage_spec
from edgepack.pipeline.private_recipe import check_private_recipe
from edgepack.pipeline.metric_kinds import (check_stages_fit, kind_of, metric_from_dict,
                                            metric_settings, metric_to_dict)
from edgepack.pipeline.stage_modules import load_stages
from edgepack.pipeline.user_code import check_builder_module

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

@dataclass
class ModelSpec:
    """The model to compress: a builder, its arguments, and weights or training."""

    build: str = "edgepack.zoo:mnist1d_cnn"
    args: dict = field(default_factory=dict)
    weights: str = ""
    train_epochs: int = 0
    lr: float = 1e-2
    augment: str = "none"            # training inputs perturbed each step: "shift" or "noise"
    dp: dict = field(default_factory=dict)   # DP-SGD: {epsilon, delta, ...}; see
    #                                          private_recipe.check_dp_settings

    def __post_init__(self):
        check_finite_fields(self, "[model]")
        check_budget("[model]", "train_epochs", self.train_epochs, "epochs")
        check_choice("[model]", "augment", self.augment, AUGMENTATIONS)
        if self.lr <= 0:
            raise ValueError(f"[model] lr must be > 0, got {self.lr}")


@dataclass
class DataSpec:
    """The data provider: ``module:function(**args)`` -> {"train", "calibration", ...}."""

    provider: str = "edgepack.zoo:mnist1d"
    args: dict = field(default_factory=dict)
    public: tuple[str, ...] = ()     # the provider's sets independent of the private training set

    def __post_init__(self):
        self.public = tuple(self.public)




def bench_to_dict(bench: BenchConfig, providers) -> dict:
    """The recipe's [bench] table: every BenchConfig field but ``provider``, and ``providers``."""
    data = {k: v for k, v in bench.to_dict().items() if k != "provider"}
    return {"providers": list(providers), **data}


@dataclass
class Recipe:
    """A whole pipeline, as data."""

    name: str
    model: ModelSpec
    data: DataSpec
    stages: list[StageConfig]
    bench: BenchConfig = field(default_factory=BenchConfig)
    providers: tuple[str, ...] = ("cpu",)
    robustness: RobustnessConfig = field(default_factory=RobustnessConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    stage_modules: tuple[str, ...] = ()
    seed: int = 0
    tolerance: float = 0.01
    train_threads: int = 0           # torch threads for training and attacks; 0: torch's default
    metric: Any = field(default_factory=metric_settings)   # its metric kind's settings
    base_dir: Path = field(default_factory=Path.cwd)

    def to_dict(self) -> dict:
        return {"name": self.name, "seed": self.seed, "tolerance": self.tolerance,
                "train_threads": self.train_threads,
                "model": dataclasses.asdict(self.model), "data": dataclasses.asdict(self.data),
                "stage_modules": list(self.stage_modules),
                "stages": [s.to_dict() for s in self.stages],
                "bench": bench_to_dict(self.bench, self.providers),
                "robustness": self.robustness.to_dict(), "privacy": self.privacy.to_dict(),
                "metric": metric_to_dict(self.metric)}


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
    try:
        spec = stage_spec(str(kind))
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from exc
    try:
        return spec.config.from_dict(data, where=f"{where} ({kind})")
    except TypeError as exc:
        raise ValueError(f"{where} ({kind}): {exc}") from exc


def _makers(onnx_kind: str) -> str:
    """The stage kinds that turn a torch model into an artifact of ``onnx_kind``."""
    from edgepack.core.stage import registered_kinds

    kinds = [k for k in registered_kinds() if stage_spec(k).consumes == "torch"
             and stage_spec(k).produces == onnx_kind]
    return " or ".join(kinds) or "export"


def check_stage_order(stages: list[StageConfig]) -> None:
    """Each stage must get the artifact it consumes: torch stages come before the stage that
    makes the ONNX model, ONNX stages after it; a ``once`` stage appears once."""
    current, made_by, seen = "torch", "", set()
    for i, stage in enumerate(stages):
        spec = spec_for(stage)
        if spec.once and spec.kind in seen:
            raise ValueError(f"recipe stages[{i}]: a second {spec.kind} stage; {spec.kind} once")
        seen.add(spec.kind)
        if spec.consumes == "torch" and current != "torch":
            raise ValueError(f"recipe stages[{i}]: {stage.kind} works on the torch model and "
                             f"must come before the {made_by} stage")
        if spec.consumes == "onnx" and current != "onnx":
            raise ValueError(f"recipe stages[{i}]: {stage.kind} works on an ONNX model; put an "
                             f"{_makers('onnx')} stage before it")
        if spec.produces != "package" and spec.produces != current:
            current, made_by = spec.produces, spec.kind


TOP_LEVEL = ("name", "seed", "tolerance", "train_threads", "model", "data", "stages", "bench",
             "robustness", "privacy", "stage_modules", "metric")


def recipe_from_dict(data: dict, base_dir: Path | None = None) -> Recipe:
    """Check a parsed recipe and build its configs."""
    unknown = [k for k in data if k not in TOP_LEVEL]
    if unknown:
        raise ValueError(f"recipe: unknown key {unknown[0]!r}{did_you_mean(unknown[0], TOP_LEVEL)};"
                         f" valid keys: {', '.join(TOP_LEVEL)}")
    for key, kind, label in (("name", str, "a string"), ("seed", int, "an integer"),
                             ("train_threads", int, "an integer >= 0 (0: torch's default)")):
        if key in data and (not isinstance(data[key], kind) or isinstance(data[key], bool)):
            raise ValueError(f"recipe: {key} must be {label}, got {data[key]!r}")
    if data.get("train_threads", 0) < 0:
        raise ValueError(f"recipe: train_threads must be an integer >= 0 (0: torch's default), "
                         f"got {data['train_threads']!r}")
    tolerance = data.get("tolerance", 0.01)
    if not is_finite_number(tolerance) or tolerance < 0:
        raise ValueError(f"recipe: tolerance must be a number >= 0, got {tolerance!r}")
    if "model" not in data:
        raise ValueError("recipe: missing [model] table (build = 'module:function')")
    stage_modules = data.get("stage_modules", [])
    if not isinstance(stage_modules, list) or not all(isinstance(m, str) for m in stage_modules):
        raise ValueError("recipe: stage_modules must be a list of module names, e.g. "
                         "[\"my_stages\"]")
    for module in stage_modules:
        check_builder_module(f"{module}:stage", "stage_modules entry")
    load_stages(stage_modules, base_dir)
    stages_raw = data.get("stages", [])
    if not isinstance(stages_raw, list):
        raise ValueError("recipe: stages must be an array of tables ([[stages]])")
    stages = [stage_from_dict(i, s) for i, s in enumerate(stages_raw)]
    check_stage_order(stages)
    bench, providers = bench_from_dict(data.get("bench", {}))
    recipe = Recipe(name=data.get("name", "recipe"), seed=data.get("seed", 0),
                  tolerance=float(tolerance), train_threads=data.get("train_threads", 0),
                  model=_table("model", ModelSpec, data["model"]),
                  data=_table("data", DataSpec, data.get("data", {})), stages=stages,
                  bench=bench, providers=providers,
                  robustness=_table("robustness", RobustnessConfig, data.get("robustness", {})),
                  privacy=_table("privacy", PrivacyConfig, data.get("privacy", {})),
                  stage_modules=tuple(stage_modules), base_dir=base_dir or Path.cwd(),
                  metric=metric_from_dict(data.get("metric", {})))
    check_recipe_code(recipe)
    check_stages_fit(recipe.stages, recipe.metric)
    check_private_recipe(recipe)
    if recipe.privacy.enabled and not kind_of(recipe.metric).labels:
        raise ValueError("recipe [privacy]: membership inference attacks a classifier's "
                         "labels; it needs [metric] kind = \"accuracy\"")
    if not stages:
        raise ValueError("recipe: no stages; add at least one [[stages]] table, e.g. "
                         "[[stages]] with kind = \"export\"")
    return recipe


def check_recipe_code(recipe: Recipe) -> None:
    """Every builder and provider the recipe names passes :func:`check_builder_module`."""
    check_builder_module(recipe.model.build, "[model] build")
    check_builder_module(recipe.data.provider, "[data] provider")
    for index, stage in enumerate(recipe.stages):
        student = getattr(stage, "student", None)
        if isinstance(student, dict) and student.get("build"):
            check_builder_module(str(student["build"]), f"stages[{index}].student build")


def bench_from_dict(data: Any) -> tuple[BenchConfig, tuple[str, ...]]:
    """The [bench] table: BenchConfig's own fields (checked by it) and ``providers``."""
    if not isinstance(data, dict):
        raise ValueError(f"recipe [bench] must be a table, got {data!r}")
    data = dict(data)
    if "provider" in data:
        raise ValueError("recipe [bench]: use providers = [\"cpu\", ...] (a list), not provider")
    moved = [k for k in ("robustness_eps", "robustness_samples") if k in data]
    if moved:
        raise ValueError(f"recipe [bench].{moved[0]} has moved to the [robustness] table: write "
                         "[robustness] with eps = [...] (was robustness_eps) and samples = N "
                         "(was robustness_samples)")
    providers = data.pop("providers", ["cpu"])
    if not isinstance(providers, list) or not providers or \
            not all(isinstance(p, str) for p in providers):
        raise ValueError(f"recipe [bench].providers must be a non-empty list of names, got "
                         f"{providers!r}")
    settings = checked_fields(BenchConfig, data, "recipe [bench]")
    try:
        return BenchConfig(**settings), tuple(providers)
    except ValueError as exc:
        raise ValueError(f"recipe [bench]: {exc}") from exc


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
    lines = [f"{k} = {_toml_value(data[k])}" for k in ("name", "seed", "tolerance",
                                                       "train_threads")]
    if data["stage_modules"]:
        lines.append(f"stage_modules = {_toml_value(data['stage_modules'])}")
    for table in ("model", "data", "bench", "robustness", "privacy", "metric"):
        lines += ["", f"[{table}]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in data[table].items() if v is not None]
    for stage in data["stages"]:
        lines += ["", "[[stages]]"]
        lines += [f"{k} = {_toml_value(v)}" for k, v in stage.items() if v is not None]
    return "\n".join(lines) + "\n"
