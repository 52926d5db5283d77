"""The import graph flows one way: core <- bench <- export <- compress <- edgepack, and the
scripts in benchmarks/ and examples/ sit on top (nothing imports them).

The layers keep their folders at the repository's top level and are installed under one name
(``core/`` is ``edgepack.core``, ...); the graph is read by those installed names.

Read statically from every file (function-level imports included, relative imports resolved,
``importlib.import_module``/``__import__`` with a constant name counted as imports), so an
import hidden inside a function cannot bring a cycle back. A dynamic import whose name is not
a constant is allowed only at the sites listed in :data:`DYNAMIC_IMPORT_SITES`, each with the
reason it cannot bring an arrow back up.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("core", "bench", "export", "compress")   # folders installed as edgepack.<layer>
PACKAGES = LAYERS + ("edgepack",)
SCRIPTS = ("benchmarks", "examples")
ALLOWED = {"core": set(), "bench": {"core"}, "export": {"core", "bench"},
           "compress": {"core", "bench", "export"},
           "edgepack": {"core", "bench", "export", "compress"},
           "benchmarks": {"core", "bench", "export", "compress", "edgepack", "benchmarks"},
           "examples": {"core", "bench", "export", "compress", "edgepack"}}
MAX_LINES = 450
# Imports whose module name is computed: where, and why that name stays in bounds.
DYNAMIC_IMPORT_SITES = {
    "edgepack.core.registry": "a registry imports the modules of the one package it was given, which "
                     "is always the package that holds the registry (checked below)",
    "edgepack.core.deps": "optional third-party packages (optimum, transformers), never the project's",
    "edgepack": "the lazy public API: names listed in a constant table of edgepack modules",
    "edgepack.cli.main": "the subcommands, edgepack.cli.<name>_cmd for a constant list",
    "edgepack.pipeline.user_code": "the user's builders and providers, refused by name first",
    "edgepack.pipeline.stage_modules": "the built-in stage modules (a constant tuple) and the "
                                       "recipe's own stage_modules (the user's code)",
    "benchmarks.art_reference": "the Adversarial Robustness Toolbox's modules (third-party)",
}


def _module_name(path: Path) -> str:
    """The name a file is imported by: a layer's files under ``edgepack.``."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join((["edgepack"] if parts[0] in LAYERS else []) + parts)


def _modules() -> dict[str, Path]:
    found = {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    found.update({_module_name(p): p for folder in SCRIPTS for p in (ROOT / folder).glob("*.py")})
    return found


def _absolute(node: ast.ImportFrom, name: str, path: Path) -> str:
    """The module a ``from ... import`` names, its dots resolved against ``name``."""
    if node.level == 0:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _dynamic_target(node: ast.Call) -> str | None:
    """The constant module name of ``importlib.import_module("x")`` / ``__import__("x")``;
    "" for a computed name; None when the call is not a dynamic import."""
    func = node.func
    called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    if called not in ("import_module", "__import__"):
        return None
    if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value,
                                                                             str):
        return node.args[0].value
    return ""


def _imports(path: Path, modules: dict, name: str = "") -> tuple[set[str], bool]:
    """Project modules that ``path`` imports anywhere in its body, and whether it imports a
    computed module name."""
    found, computed = set(), False

    def add(module: str, names=()):
        for alias in names:
            if f"{module}.{alias}" in modules:      # `from pkg import submodule`
                found.add(f"{module}.{alias}")
            elif module in modules:                  # `from module import name`
                found.add(module)
        if not names and module in modules:
            found.add(module)

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom):
            add(_absolute(node, name, path), [alias.name for alias in node.names])
        elif isinstance(node, ast.Call):
            target = _dynamic_target(node)
            if target:
                add(target)
            elif target == "":
                computed = True
    return found, computed


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, modules, name)[0] - {name} for name, path in modules.items()}


def _top(name: str) -> str:
    """The layer a module belongs to (``edgepack.core.x`` -> ``core``; the tool's own
    modules -> ``edgepack``)."""
    parts = name.split(".")
    return parts[1] if parts[0] == "edgepack" and len(parts) > 1 and parts[1] in LAYERS \
        else parts[0]


def test_packages_import_only_the_layers_below_them():
    bad = sorted(f"{a} imports {b}" for a, deps in _graph().items() for b in deps
                 if _top(b) != _top(a) and _top(b) not in ALLOWED[_top(a)])
    assert bad == []


def test_no_import_cycle_between_files():
    graph, state, cycles = _graph(), {}, []

    def visit(node, stack):
        state[node] = "open"
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_core_is_a_leaf():
    assert all(_top(dep) == "core" for name, deps in _graph().items()
               if _top(name) == "core" for dep in deps)


def test_no_file_imports_a_layer_by_its_folder_name():
    """``from core.x`` would load a second copy of a module beside ``edgepack.core.x`` (and
    finds nothing once installed): every import names ``edgepack.``."""
    bare = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets = [alias.name for alias in node.names] if isinstance(node, ast.Import) \
                else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level \
                else []
            bare += [f"{name}: {t}" for t in targets if t.split(".")[0] in LAYERS]
    assert bare == []


def test_the_installed_packages_are_the_folders_under_one_name():
    """pyproject's package list is every folder with an __init__.py, under ``edgepack.``,
    each mapped to its folder; nothing else (benchmarks/, tests/) is installed."""
    try:
        import tomllib
    except ModuleNotFoundError:   # Python 3.10
        import tomli as tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {_module_name(init) for pkg in PACKAGES for init in (ROOT / pkg).rglob(
        "__init__.py")}
    assert set(config["packages"]) == folders
    assert all(name.startswith("edgepack") for name in config["packages"])
    assert config["package-dir"] == {"edgepack": "edgepack",
                                     **{f"edgepack.{layer}": layer for layer in LAYERS}}


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_computed_imports_happen_only_at_the_listed_sites():
    modules = _modules()
    sites = {name for name, path in modules.items() if _imports(path, modules, name)[1]}
    assert sites <= set(DYNAMIC_IMPORT_SITES), sorted(sites - set(DYNAMIC_IMPORT_SITES))


def test_every_registry_discovers_the_package_that_holds_it():
    """``Registry(family, __name__)`` in a package's __init__: discovery stays inside it."""
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "Registry":
                where = node.args[1] if len(node.args) > 1 else None
                assert isinstance(where, ast.Name) and where.id == "__name__", name
                assert path.name == "__init__.py", name


def test_the_checker_sees_function_level_relative_and_dynamic_imports(tmp_path):
    modules = {"edgepack.compress.prune": None, "edgepack.compress.quantize.methods": None,
               "edgepack.compress.quantize.presets": None, "edgepack.bench.runner": None}
    source = ("def f():\n    from edgepack.compress.prune import prune\n"
              "def g():\n    from .presets import PRESETS\n"
              "def h():\n    import importlib\n    importlib.import_module('edgepack.bench.runner')\n"
              "def k(x):\n    __import__(x)\n")
    package = tmp_path / "compress" / "quantize"
    package.mkdir(parents=True)
    (package / "m.py").write_text(source)
    found, computed = _imports(package / "m.py", modules, "edgepack.compress.quantize.m")
    assert found == {"edgepack.compress.prune", "edgepack.compress.quantize.presets", "edgepack.bench.runner"}
    assert computed


def test_nothing_imports_the_scripts():
    assert not [f"{a} imports {b}" for a, deps in _graph().items() for b in deps
                if _top(b) in SCRIPTS and _top(a) not in SCRIPTS]


def test_every_module_has_a_basename_of_its_own():
    """Two files named alike (decoder.py in bench/ and in export/) leave a reader guessing
    which one a traceback or a search hit means: one of each name, the scripts included."""
    from collections import Counter

    names = Counter(path.name for path in _modules().values()
                    if path.name not in ("__init__.py", "__main__.py"))
    assert [name for name, count in names.items() if count > 1] == []
