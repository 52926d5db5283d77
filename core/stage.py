"""The stage contract, and the registry every stage joins where it is defined.

A stage is a verb function plus a config dataclass; it returns a :class:`StageResult`
holding the artifact (an ``nn.Module`` or the path of an ``.onnx`` file) and a JSON-able
record of what it did. Configs validate themselves in ``__post_init__`` and round-trip
through plain dicts (``to_dict``/``from_dict``), which is how recipes and reports carry them.

A stage joins pipelines by registering a :class:`StageSpec` next to its verb: what it
consumes and produces (``"torch"`` or ``"onnx"``; ``"package"`` for an end product the
pipeline does not time), whether it promises a speed-up, how to run it from a
:class:`StageInput`, and how to rebuild its torch artifact on ``--resume``. The pipeline and
the recipe loader read nothing else: adding a stage is one file plus its tests.

Example (a complete custom stage)::

    @dataclass
    class RenameConfig(StageConfig):
        kind: ClassVar[str] = "rename-inputs"
        prefix: str = option("x_", "prefix for every input name")

    def run_rename(config, given: StageInput) -> StageResult:
        ...   # read given.artifact (an .onnx path), write given.folder / "model.onnx"
        return StageResult(given.folder / "model.onnx", {"renamed": n})

    register_stage(StageSpec("rename-inputs", RenameConfig, consumes="onnx",
                             produces="onnx", run=run_rename))
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from edgepack.core.checks import checked_fields, did_you_mean

CONFIG_VERSION = 1
ARTIFACT_KINDS = ("torch", "onnx", "package")


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory=None,
           flag: bool = True, choices: tuple = ()) -> Any:
    """A config field whose help text lives on the field (command-line flags are made from it).

    ``flag=False`` keeps a field out of generated command lines (recipe-only settings);
    ``choices`` lists the valid strings for the flag's help.
    """
    metadata = {"help": help, "flag": flag, "choices": tuple(choices)}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class StageResult:
    """What a stage hands to the next one: its artifact and a JSON-able record."""

    artifact: Any
    record: dict = field(default_factory=dict)


class StageConfig:
    """Mixin for stage configs: ``kind`` names the stage; dicts round-trip with checks.

    ``version`` is written into every stage record; a run folder made with another version
    is not reused by ``--resume``.
    """

    kind: ClassVar[str] = ""
    version: ClassVar[int] = CONFIG_VERSION

    def to_dict(self) -> dict:
        """A plain dict (TOML/JSON-able) with ``kind`` first; tuples become lists."""
        out: dict[str, Any] = {"kind": self.kind}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "") -> "StageConfig":
        """Build a config from a dict, rejecting unknown keys and wrong types by name."""
        owner = where or cls.kind or cls.__name__
        fields = {k: v for k, v in data.items() if k != "kind"}
        return cls(**checked_fields(cls, fields, owner))  # type: ignore[call-arg]


@dataclass
class StageInput:
    """Everything a stage adapter may use: the artifact it works on and the run around it.

    ``artifact`` is an ``nn.Module`` for stages that consume torch, an ``.onnx`` path for
    stages that consume ONNX. ``build`` turns ``"module:function"`` plus arguments into a
    model (the recipe's import rules); ``eval_inputs`` are held-out inputs for checks;
    ``metric`` is the recipe's ``[metric]`` spec, for stages that judge quality themselves
    (the decoder quantize search holds its candidates to the same thresholds).
    """

    artifact: Any
    folder: Path
    data: dict = field(default_factory=dict)
    example_inputs: Any = None
    eval_inputs: Any = None
    teacher: Any = None
    tolerance: float = 0.01
    resume: bool = False
    progress: bool = True
    build: Callable[[str, dict], Any] | None = None
    checkpoint: Path | None = None
    metric: Any = None


def _no_speed_promise(config: StageConfig) -> bool:
    return False


@dataclass(frozen=True)
class StageSpec:
    """How a stage joins a pipeline.

    - ``run(config, given)`` makes the candidate and returns a :class:`StageResult`;
    - ``promises_speed(config)``: the candidate must be faster than its input to be kept;
    - ``slow_cause(config, onnx_path)``: the likely reason a candidate was not faster;
    - ``rebuild(config, given, weights_path)``: the torch module a finished stage made,
      rebuilt from its saved weights on ``--resume`` (torch-producing stages only);
    - ``preflight(config, data, resolve)``: checks made before the run folder exists
      (``resolve`` imports a ``module:function`` or raises ``ValueError``);
    - ``failures``: exception types meaning "the stage ran and failed its own check": the
      candidate is reported as not kept and the pipeline goes on;
    - ``once``: at most one stage of this kind per pipeline;
    - ``for_decoders``: it works on a decoder LLM with a KV cache (and only there): the
      language-model metric kind takes these stages, the others do not.
    """

    kind: str
    config: type
    consumes: str
    produces: str
    run: Callable[[Any, StageInput], StageResult]
    promises_speed: Callable[[Any], bool] = _no_speed_promise
    slow_cause: Callable[[Any, Path], str] | None = None
    rebuild: Callable[[Any, StageInput, Path], Any] | None = None
    preflight: Callable[[Any, dict, Callable[[str], Any]], None] | None = None
    failures: tuple = ()
    once: bool = False
    for_decoders: bool = False

    def __post_init__(self):
        for name in ("consumes", "produces"):
            if getattr(self, name) not in ARTIFACT_KINDS:
                raise ValueError(f"stage {self.kind!r}: {name}={getattr(self, name)!r}; "
                                 f"expected one of {', '.join(ARTIFACT_KINDS)}")
        if self.produces == "torch" and self.rebuild is None:
            raise ValueError(f"stage {self.kind!r} produces a torch model and needs rebuild "
                             "(how --resume turns its saved weights back into a module)")


_REGISTRY: dict[str, StageSpec] = {}


def register_stage(spec: StageSpec) -> StageSpec:
    """Add a stage to the registry (called where the stage is defined)."""
    existing = _REGISTRY.get(spec.kind)
    if existing is not None and existing.config is not spec.config:
        raise ValueError(f"stage kind {spec.kind!r} is already registered by "
                         f"{existing.config.__module__}.{existing.config.__name__}")
    if getattr(spec.config, "kind", None) != spec.kind:
        raise ValueError(f"stage {spec.kind!r}: its config's kind is "
                         f"{getattr(spec.config, 'kind', None)!r}")
    _REGISTRY[spec.kind] = spec
    return spec


def stage_spec(kind: str) -> StageSpec:
    """The registered stage of this kind; an unknown kind names the known ones."""
    if kind not in _REGISTRY:
        known = sorted(_REGISTRY)
        raise ValueError(f"unknown stage kind {kind!r}{did_you_mean(str(kind), known)}; "
                         f"expected one of {', '.join(known)}")
    return _REGISTRY[kind]


def spec_for(config: StageConfig) -> StageSpec:
    """The registered stage a config belongs to."""
    return stage_spec(config.kind)


def registered_kinds() -> list[str]:
    return list(_REGISTRY)
