"""No unpickling through a recipe: loaders refused by name, and a guard while user code runs.

A recipe names code to run (``build = "module:function"``), and a loader of pickled data is
code execution with a file for its program: ``torch:load`` with ``weights_only = false``, or
``numpy:load`` with ``allow_pickle = true``, runs whatever the file holds. Two defences, both
lifted only by an explicit ``--trust-pickle``:

1. :func:`pickle_loader` names the loaders of pickled data (``torch.load``, ``torch.jit.load``,
   ``numpy.load``, ``pandas.read_pickle``, and every function of ``pickle``, ``dill``,
   ``cloudpickle``, ``joblib`` ...), so a builder or provider naming one is refused before
   its module is even imported, whatever ``--allow-any-builder`` says;
2. :func:`no_unpickling` watches the unpickler itself while the user's builder or provider
   runs: every unpickler that resolves a global (which is how a pickle reaches ``os.system``)
   raises the ``pickle.find_class`` audit event (PEP 578), and under the guard that event
   raises :class:`UnpicklingRefused`. So a loader nobody listed, reached through a
   third-party wrapper, is stopped too. ``torch.load(weights_only=True)`` uses torch's own
   restricted unpickler, which resolves nothing outside its allow-list and raises no such
   event: safe loading keeps working.

Example::

    with no_unpickling("model builder 'my_models:net'"):
        model = builder(**args)      # any pickle.find_class in here raises UnpicklingRefused
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import Iterator

from edgepack.core.errors import BadInput

# Modules whose every function reads or writes pickles (or runs marshalled code).
PICKLE_MODULES = ("pickle", "_pickle", "cPickle", "pickletools", "copyreg", "shelve",
                  "marshal", "dill", "cloudpickle", "joblib", "torch.package", "srsly.cloudpickle")
# Single functions of otherwise ordinary modules that unpickle (or run serialized code).
PICKLE_FUNCTIONS = {
    "torch": ("load",), "torch.serialization": ("load",),
    "torch.jit": ("load",), "torch.jit._serialization": ("load",),
    "torch.export": ("load",), "torch.hub": ("load", "load_state_dict_from_url"),
    "numpy": ("load",), "numpy.lib.npyio": ("load",),
    "numpy.lib.format": ("read_array",),
    "pandas": ("read_pickle",), "pandas.io.pickle": ("read_pickle",),
    "pandas.compat.pickle_compat": ("load", "loads"),
    "sklearn.externals.joblib": ("load",), "keras.models": ("load_model",),
    "mlflow.pytorch": ("load_model",), "skorch": ("load_params",),
}
TRUST_FLAG = "--trust-pickle"


class UnpicklingRefused(BadInput):
    """User code tried to unpickle, which can run any code: exit 2 unless trusted."""


def pickle_loader(spec: str) -> str | None:
    """The loader of pickled data ``module:function`` names (``"torch.load"``), or None."""
    module, _, attribute = spec.partition(":")
    for name in PICKLE_MODULES:
        if module == name or module.startswith(name + "."):
            return f"{module}.{attribute}" if attribute else module
    if attribute.split(".")[0] in PICKLE_FUNCTIONS.get(module, ()):
        return f"{module}.{attribute}"
    return None


def refuse_pickle_loader(spec: str, what: str) -> None:
    """Refuse a builder or provider that is a loader of pickled data, before any import."""
    loader = pickle_loader(spec)
    if loader is not None:
        raise UnpicklingRefused(
            f"{what} {spec!r} is {loader}, which can unpickle a file, and unpickling runs any "
            f"code the file holds; build the model in your own function from safetensors "
            f"weights, or pass {TRUST_FLAG} if you trust every file it reads")


_active: list[str] = []          # what is running under the guard, outermost first
_install_lock = threading.Lock()
_installed: list[bool] = []


def _audit(event: str, args: tuple) -> None:
    if event == "pickle.find_class" and _active:
        module, name = (list(args) + ["?", "?"])[:2]
        raise UnpicklingRefused(
            f"{_active[0]} tried to unpickle (it asked for {module}.{name}), and unpickling "
            f"runs any code the file holds; load weights from safetensors or with "
            f"torch.load(..., weights_only=True), or pass {TRUST_FLAG} if you trust the file")


def _install_hook() -> None:
    """Audit hooks cannot be removed, so there is one, installed once, idle off-guard."""
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)
            _installed.append(True)


@contextlib.contextmanager
def no_unpickling(what: str, trusted: bool = False) -> Iterator[None]:
    """While the block runs, any unpickler in this process that resolves a global raises
    :class:`UnpicklingRefused` naming ``what`` (``trusted=True``: no guard). The guard is
    process-wide, so threads the user's code starts are watched too."""
    if trusted:
        yield
        return
    _install_hook()
    _active.append(what)
    try:
        yield
    finally:
        _active.pop()
