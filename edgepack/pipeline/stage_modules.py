"""Which stages a pipeline can use: the built-in ones, and a recipe's own.

Every stage registers itself (:func:`edgepack.core.stage.register_stage`) in the module that defines
it; importing the module is all it takes. The built-in modules are listed here; a recipe names
its own under ``stage_modules`` (imported from the recipe's folder first).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from edgepack.core.stage import registered_kinds

BUILTIN_STAGE_MODULES = ("edgepack.compress.distill", "edgepack.compress.prune", "edgepack.export.torch_export",
                         "edgepack.export.optimize", "edgepack.export.fuse_transformer", "edgepack.compress.quantize",
                         "edgepack.export.package", "edgepack.export.decoder_export",
                         "edgepack.compress.quantize.decoder_quantize_stage")


def load_stages(extra_modules=(), base_dir: Path | None = None) -> list[str]:
    """Import the built-in stage modules and ``extra_modules``; return the known kinds."""
    for name in BUILTIN_STAGE_MODULES:
        importlib.import_module(name)
    for name in extra_modules:
        _import_user_module(name, base_dir)
    return registered_kinds()


def _import_user_module(name: str, base_dir: Path | None) -> None:
    added = base_dir is not None and str(base_dir) not in sys.path
    if added:
        sys.path.insert(0, str(base_dir))
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name.split(".")[0] and exc.name != name:
            raise
        raise ValueError(f"recipe stage_modules: module {name!r} not found (looked in "
                         f"{base_dir or 'the Python path'} and the Python path)") from exc
    finally:
        if added:
            sys.path.remove(str(base_dir))
