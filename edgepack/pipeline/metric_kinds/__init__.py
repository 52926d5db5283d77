"""Metric kinds: what "still right" means for a recipe's model, one file each.

A recipe's ``[metric]`` table names a kind (``accuracy`` by default, ``embedding``,
``language-model``) and that kind's own settings; a key of another kind is refused naming
the chosen kind's keys. A kind is a :class:`MetricKind` registered in its file, holding:

- ``settings``: its ``[metric]`` keys (a dataclass; its ``kind`` class variable names it);
- ``fits(stage_spec)``: which stages work on its models (a decoder's stages go with the
  language model, and only with it); ``check(settings, data)``: what the data provider must
  give, checked before the run folder exists;
- ``prepare(run, teacher)``: its reference, computed once (the teacher's embeddings, the fp32
  decoder's answers), and the teacher's row of the report with the artifact the first stage
  starts from;
- ``measure(run, candidate, source)``: a candidate's figures, timed beside its input;
- ``judge(run, config, source, candidate, figures)``: why a candidate is not kept (empty:
  kept);
- ``summary(figures)``: one log fragment; ``table(rows, markdown)``: the report's columns;
  ``markdown(report, rows)``: report.md's text about those figures (``measured(report)``:
  its sentence on how they were measured, when not the latency benchmark's); ``plot(report,
  rows, out_dir)``: tradeoff.png and any plot of its own.

The runner (:mod:`edgepack.pipeline.run`), the resume logic and the outcome are written once
and call these; nothing else looks at a kind's name. Adding a kind (a speech or a detection
metric) is one file in this package plus its tests.

Example: a kind that keeps a stage while its accuracy stays above a floor, whatever its
input's (a file of this package, ``accuracy_floor.py``; it reuses the accuracy kind's
measures, table and plots)::

    @dataclass(frozen=True)
    class AccuracyFloor:
        kind: ClassVar[str] = "accuracy-floor"
        min_accuracy: float = option(0.9, "lowest accuracy a stage may keep")

    def judge(run, config, source, candidate, figures):
        low = figures["accuracy"] < run.metric.min_accuracy
        return [f"accuracy {figures['accuracy']:.4f} < {run.metric.min_accuracy}"] if low else []

    METRIC_KINDS.register(MetricKind(
        "accuracy-floor", AccuracyFloor, prepare=accuracy.prepare, measure=accuracy.measure,
        judge=judge, summary=accuracy.summary, table=accuracy.table, markdown=accuracy.markdown,
        plot=accuracy.plot, labels=True))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from edgepack.core.registry import Registry, settings_dict, split_settings
from edgepack.core.stage import registered_kinds, spec_for, stage_spec

DEFAULT_KIND = "accuracy"


def _fits_any_but_decoders(stage_spec) -> bool:
    return not stage_spec.for_decoders


def _nothing_to_check(settings, data: dict) -> None:
    return None


@dataclass(frozen=True)
class MetricKind:
    """How one kind of quality is measured, judged and reported (see the module notes)."""

    name: str
    settings: type
    prepare: Callable[[Any, Any], tuple[dict, Any]]
    measure: Callable[[Any, Any, Any], dict]
    judge: Callable[[Any, Any, Any, Any, dict], list[str]]
    summary: Callable[[dict], str]
    table: Callable[[list[dict], bool], str]
    markdown: Callable[[dict, list[dict]], str]
    plot: Callable[[dict, list[dict], Any], Any]
    fits: Callable[[Any], bool] = _fits_any_but_decoders
    check: Callable[[Any, dict], None] = _nothing_to_check
    labels: bool = False          # it judges classes against labels (membership attacks can run)
    measured: Callable[[dict], str] | None = None   # report.md's "measured on" sentence
    artifact_noun: str = "model"  # what its stages make ("decoder"), for the report's lines
    described_as: str = "this model"   # its models, in messages ("a decoder LLM")
    order: int = 100


METRIC_KINDS: Registry[MetricKind] = Registry("metric kind", __name__)


def kind_of(settings) -> MetricKind:
    """The registered kind a ``[metric]`` settings object belongs to (None: the default)."""
    return METRIC_KINDS.get(DEFAULT_KIND if settings is None else type(settings).kind)


def kind_of_report(report: dict) -> MetricKind:
    """The kind a report was made with (its ``metric`` record)."""
    return METRIC_KINDS.get((report.get("metric") or {}).get("kind", DEFAULT_KIND))


def metric_settings(kind: str = DEFAULT_KIND, **fields):
    """The settings of ``kind`` (checked by its dataclass), e.g.
    ``metric_settings("embedding", min_cosine=0.97)``."""
    return metric_from_dict({"kind": kind, **fields})


def metric_from_dict(data: dict, owner: str = "recipe [metric]"):
    """A ``[metric]`` table -> its kind's settings; an unknown kind names the registered
    ones, a key of another kind names the chosen kind's keys (``ValueError``)."""
    if not isinstance(data, dict):
        raise ValueError(f"{owner} must be a table, got {data!r}")
    data = dict(data)
    kind = data.pop("kind", DEFAULT_KIND)
    if not isinstance(kind, str):
        raise ValueError(f"{owner}.kind must be a string, got {kind!r}")
    _, settings = split_settings(data, [], kind, METRIC_KINDS, owner)
    return settings


def metric_to_dict(settings) -> dict:
    """``{"kind": ..., **its settings}``, as a recipe writes it and the report records it."""
    return {"kind": type(settings).kind, **settings_dict(settings)}


def check_stages_fit(stages: list, metric) -> None:
    """Every stage works on the metric kind's models: a decoder's stages go with the
    language-model kind, and only they do (``ValueError`` before anything runs)."""
    kind = kind_of(metric)
    for index, config in enumerate(stages):
        spec = spec_for(config)
        if kind.fits(spec):
            continue
        if spec.for_decoders:
            raise ValueError(f"recipe stages[{index}]: {config.kind} works on a decoder LLM; "
                             f"set [metric] kind = \"language-model\"")
        fitting = [k for k in registered_kinds() if kind.fits(stage_spec(k))]
        raise ValueError(f"recipe stages[{index}]: kind {config.kind!r} does not work on "
                         f"{kind.described_as} ([metric] kind = {kind.name!r}); use "
                         f"{' and '.join(fitting)}")


__all__ = ["DEFAULT_KIND", "check_stages_fit", "kind_of_report", "METRIC_KINDS", "MetricKind", "kind_of", "metric_from_dict",
           "metric_settings", "metric_to_dict"]
