"""Which privacy guarantee holds for which artifact of a run with a DP-SGD teacher.

A teacher trained with ``[model.dp]`` is (epsilon, delta)-differentially private with respect
to its training set (:mod:`edgepack.compress.private`). Every artifact computed from it *and from data
independent of that set* keeps the guarantee by post-processing: a student distilled on a
transfer set the recipe declares public (``[data] public = ["transfer", ...]``) with the
teacher's soft targets, its pruned and int8 versions (calibrated on a public set). An
artifact whose stage trains on the private set again (its labels or its inputs) has no
guarantee, and a recipe that would produce one is refused before anything runs: the run
would otherwise ship a student the report could not honestly call private.

What each stage reads, and so what must be public:

- ``distill``: the transfer set (``labelled = false``: not the private ``train`` set);
- ``prune``: fine-tuning on the transfer set (``finetune_labelled = false``), or none;
- ``quantize``: the ``calibration`` set (static calibration, the output check's held-out
  rows and the search's static candidates all read it, whatever the method);
- ``export``, ``package``, dynamic / fp16 / int4 quantization: no data.
The validation and evaluation sets pick epochs and keep stages; they are not the private
set, and DP-SGD's guarantee is about that set alone, so they need no declaration.
"""

from __future__ import annotations

from edgepack.pipeline.metric_kinds import kind_of

PRIVATE_SET = "train"
DATA_FREE = ("export", "package")


def _needs(stage) -> list[tuple[str, str]]:
    """(set the stage reads, the setting that makes it read it) for one stage."""
    kind = stage.kind
    if kind == "distill":
        if stage.labelled:
            return [(PRIVATE_SET, "labelled = true (set labelled = false)")]
        return [("transfer", "transfer_samples")]
    if kind == "prune":
        if not stage.finetune_epochs:
            return []
        if stage.finetune_labelled:
            return [(PRIVATE_SET, "finetune_labelled = true (set finetune_labelled = false "
                     "with finetune_transfer_samples > 0, or finetune_epochs = 0)")]
        return [("transfer", "finetune_transfer_samples")]
    if kind == "quantize":   # calibration, the output check and the search all read it
        return [("calibration", "every quantize stage is handed the calibration set")]
    if kind in DATA_FREE:
        return []
    return [("?", f"kind {kind!r}")]


def check_dp_settings(model) -> None:
    """``[model.dp]``: DP-SGD settings, for a teacher this run trains itself."""
    from edgepack.core.checks import checked_fields
    from edgepack.compress.private import AUGMENTATIONS_DP, DPConfig

    DPConfig(**checked_fields(DPConfig, model.dp, "recipe [model.dp]"))
    if model.weights or model.train_epochs <= 0:
        raise ValueError("[model.dp] trains the teacher with DP-SGD: set train_epochs > 0 "
                         "and no weights file (a given file's guarantee cannot be checked)")
    if model.augment not in AUGMENTATIONS_DP:
        raise ValueError(f"[model.dp]: augment = {model.augment!r} scales each batch by its "
                         "own spread, which mixes samples; use one of "
                         f"{', '.join(AUGMENTATIONS_DP)}")


def check_private_recipe(recipe) -> None:
    """With ``[model.dp]``: the DP settings hold, and every stage reads only data the recipe
    declares public, or the recipe is refused naming the stage, the setting and the fix."""
    if not recipe.model.dp:
        return
    check_dp_settings(recipe.model)
    if not kind_of(recipe.metric).labels:
        raise ValueError("[model.dp] trains a classifier teacher with DP-SGD; it works with "
                         "[metric] kind = \"accuracy\" only")
    public = set(recipe.data.public)
    if PRIVATE_SET in public:
        raise ValueError("[data] public lists 'train', the set the DP teacher is private "
                         "about; remove it")
    for index, stage in enumerate(recipe.stages):
        for needed, because in _needs(stage):
            if needed == "?":
                raise ValueError(f"recipe stages[{index}] ({stage.kind}): the teacher is "
                                 "trained with DP-SGD, and what this stage reads is not known, "
                                 "so no guarantee could be claimed for its artifact; remove "
                                 "[model.dp] or the stage")
            if needed == PRIVATE_SET:
                raise ValueError(f"recipe stages[{index}] ({stage.kind}): the teacher is "
                                 "trained with DP-SGD, but this stage also trains on its "
                                 f"private labelled data ({because}); the student would not "
                                 "keep the teacher's guarantee, so the run is refused")
            if needed not in public:
                raise ValueError(f"recipe stages[{index}] ({stage.kind}) reads the "
                                 f"{needed!r} set ({because}), which [data] public does not "
                                 f"declare; add it to public = [...] if it is independent of "
                                 "the private training set (for edgepack.zoo:mnist1d: the "
                                 "transfer set is generated with its own seed, and "
                                 "calibration_seed >= 0 makes calibration so), or remove "
                                 "[model.dp]")


def guarantees(dp_record: dict | None, teacher_entry: dict, entries: list[dict],
               public: tuple[str, ...]) -> dict:
    """``{artifact name: one line}``: what formal guarantee each row of the report has."""
    if dp_record is None:
        line = ("none: no formal guarantee (the teacher is not trained with DP-SGD); the "
                "membership figures are empirical")
        return {row["name"]: line for row in [teacher_entry, *entries]}
    eps, delta = dp_record["epsilon"], dp_record["delta"]
    found = {"teacher": (f"({eps:g}, {delta:g})-DP for its {dp_record['private_samples']:,} "
                         f"training samples: {dp_record['mechanism']}, noise multiplier "
                         f"{dp_record['noise_multiplier']:.3f}, clip "
                         f"{dp_record['max_grad_norm']:g}, {dp_record['steps']} steps, "
                         f"{dp_record['accountant'].upper()} accountant")}
    sets = ", ".join(sorted(public)) or "no data"
    for entry in entries:
        found[entry["name"]] = (f"({eps:g}, {delta:g})-DP by post-processing: made from the "
                                f"DP teacher and public data only ({sets})")
    return found
