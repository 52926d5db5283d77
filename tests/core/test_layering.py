"""The import graph flows one way: core <- bench <- export <- compress <- edgepack.

Read statically from every file (function-level imports included), so an import hidden
inside a function cannot bring a cycle back.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("core", "bench", "export", "compress", "edgepack")
ALLOWED = {"core": set(), "bench": {"core"}, "export": {"core", "bench"},
           "compress": {"core", "bench", "export"},
           "edgepack": {"core", "bench", "export", "compress"}}
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _project_modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}


def _imports(path: Path, modules: dict) -> set[str]:
    """Project modules that ``path`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"   # `from pkg import submodule`
                if submodule in modules:
                    found.add(submodule)
                elif node.module in modules:                # `from module import name`
                    found.add(node.module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _project_modules()
    return {name: _imports(path, modules) - {name} for name, path in modules.items()}


def test_packages_import_only_the_layers_below_them():
    bad = sorted(f"{a} imports {b}" for a, deps in _graph().items() for b in deps
                 if b.split(".")[0] != a.split(".")[0]
                 and b.split(".")[0] not in ALLOWED[a.split(".")[0]])
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
    assert all(dep.startswith("core") for name, deps in _graph().items()
               if name.startswith("core") for dep in deps)


def test_no_module_is_longer_than_the_limit():
    long = {name: n for name, path in _project_modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_checker_sees_a_function_level_cycle(tmp_path):
    source = "def f():\n    from compress.prune import prune\n"
    (tmp_path / "m.py").write_text(source)
    assert _imports(tmp_path / "m.py", {"compress.prune": None}) == {"compress.prune"}
