"""Run a recipe: data from its provider, the teacher prepared, then the pipeline.

Under torchrun every rank runs the recipe: rank 0 prepares the teacher (and writes the run),
the others build the same architecture and get rank 0's weights (:mod:`edgepack.pipeline.distributed`).
"""

from __future__ import annotations

import contextlib
import logging
import random
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from edgepack.pipeline import distributed
from edgepack.pipeline.measure import check_providers
from edgepack.pipeline.run_folder import check_run_folder
from edgepack.pipeline.run_inputs import recipe_inputs
from edgepack.pipeline.run import run_pipeline
from edgepack.pipeline.recipe import Recipe, load_recipe
from edgepack.pipeline.user_code import import_object, user_code
from edgepack.pipeline.privacy_probe import PrivacySetup
from edgepack.pipeline.teacher import (build_model, prepare_references, prepare_teacher,
                                       prepare_teacher_with_record)

DEMO_RECIPE = "mnist1d.toml"


def _log(message: str) -> None:
    """Stage and teacher lines: INFO on the ``edgepack`` logger (the CLI shows them)."""
    logging.getLogger("edgepack").info(message)


def load_data(recipe: Recipe) -> dict:
    """Call the recipe's data provider and check it gave what the pipeline needs."""
    provider = import_object(recipe.data.provider, recipe.base_dir, what="data provider")
    try:
        with user_code(f"data provider {recipe.data.provider!r}"):
            data = provider(**recipe.data.args)
    except TypeError as exc:
        raise ValueError(f"data provider {recipe.data.provider!r} rejected args "
                         f"{recipe.data.args}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"data provider {recipe.data.provider!r} returned "
                         f"{type(data).__name__}; expected a dict with 'train', 'calibration' "
                         "and 'evaluation'")
    missing = [k for k in ("train", "calibration", "evaluation") if data.get(k) is None]
    if missing:
        raise ValueError(f"data provider {recipe.data.provider!r} gave no {missing[0]!r} set")
    return data


@contextlib.contextmanager
def torch_threads(threads: int):
    """Train with ``threads`` intra-op threads (0: leave torch's setting), restored after.

    Small models train no faster on several threads, and on a busy machine each step then
    waits for the slowest thread: the demo's students train 5x faster on one thread when
    other work shares the cores (benchmarks/demo_wall_time.py).
    """
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@distributed.leads
def run_recipe(recipe: Recipe | str | Path, out_dir, resume: bool = False,
               progress: bool = True) -> dict:
    """Run a recipe (a Recipe or a TOML path) into ``out_dir``; return the report."""
    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe)
    # Everything that can be checked is checked before the teacher trains (by rank 0, the
    # one that writes the run folder, under torchrun): on --resume, the recipe and the files
    # it names against the run's record (the teacher's weights are compared once built).
    if distributed.join().is_main:
        check_run_folder(out_dir, resume, recipe_inputs(recipe) if resume else None)
    check_providers(recipe.providers)
    seed_everything(recipe.seed)
    data = load_data(recipe)
    if recipe.privacy.enabled:   # before the teacher trains
        from edgepack.pipeline.privacy_probe import check_privacy_data

        check_privacy_data(recipe.privacy, data)
    dp_record, references = None, []
    with torch_threads(recipe.train_threads):
        if distributed.join().is_main:
            teacher, dp_record = prepare_teacher_with_record(
                recipe.model, recipe.data, data, recipe.seed, recipe.base_dir, log=_log,
                progress=progress)
            if recipe.privacy.enabled and "lira" in recipe.privacy.attacks:
                references = prepare_references(recipe.model, recipe.data, data, recipe.seed,
                                                recipe.base_dir, recipe.privacy.references,
                                                log=_log, progress=progress)
        else:  # its weights come from rank 0 when the pipeline starts
            teacher = build_model(recipe.model.build, recipe.model.args, recipe.base_dir)
        return run_pipeline(teacher, recipe.stages, out_dir, data, tolerance=recipe.tolerance,
                            bench_config=recipe.bench, providers=recipe.providers,
                            robustness=recipe.robustness, resume=resume,
                            progress=progress, recipe=recipe, base_dir=recipe.base_dir,
                            log=_log, metric=recipe.metric,
                            privacy=PrivacySetup(recipe.privacy, references, dp_record,
                                                 recipe.data.public))


def demo_recipe() -> Recipe:
    """The built-in MNIST-1D recipe (the same file as examples/mnist1d.toml)."""
    source = resources.files("edgepack") / "recipes" / DEMO_RECIPE
    with resources.as_file(source) as path:
        return load_recipe(path)


def run_demo(out_dir="edgepack-demo", resume: bool = False, progress: bool = True) -> dict:
    """``edgepack demo``: the whole chain on MNIST-1D, offline."""
    return run_recipe(demo_recipe(), out_dir, resume=resume, progress=progress)


def demo_teacher(progress: bool = False):
    """The demo's recipe, data and trained teacher (trained once, then from the cache)."""
    recipe = demo_recipe()
    data = load_data(recipe)
    teacher = prepare_teacher(recipe.model, recipe.data, data, recipe.seed, recipe.base_dir,
                              log=lambda _: None, progress=progress)
    return recipe, data, teacher
