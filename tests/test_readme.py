"""The README is the front door: short, its Layout naming only what exists, and its set-up and
test commands the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAX_LINES = 250
LAYERS = ("core", "bench", "export", "compress")   # installed as edgepack.<layer>


def _section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:] if end == -1 else text[start:end]


def _folder_exists(name: str, top: str | None) -> bool:
    """``name/`` is a folder at the top of the repository or anywhere under ``top``."""
    if (ROOT / name).is_dir():
        return True
    return top is not None and any(p.is_dir() for p in (ROOT / top).rglob(name))


def _module_exists(dotted: str) -> bool:
    """``edgepack.core.stage`` -> ``core/stage.py`` (or a package folder), by the installed names."""
    parts = dotted.split(".")[1:]
    if parts and parts[0] in LAYERS:
        path = ROOT.joinpath(*parts)
    else:
        path = ROOT.joinpath("edgepack", *parts)
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_the_readme_is_at_most_250_lines():
    lines = len(README.read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines; move detail to a docs/ page"


def test_every_folder_the_layout_tree_names_exists():
    block = re.search(r"```\n(.*?)```", _section("Layout"), re.S).group(1)
    missing, top = [], None
    for line in block.splitlines():
        if line[:1].strip():        # a line that starts with a name starts a new top folder
            top = line.split()[0].rstrip("/")
        missing += [name for name in re.findall(r"([\w.-]+)/", line)
                    if not _folder_exists(name, top)]
    assert missing == []


def test_every_path_and_module_the_layout_names_exists():
    layout = _section("Layout")
    prose = re.sub(r"```.*?```", "", layout, flags=re.S)
    named = re.findall(r"`([^`\s]+)`", prose)
    paths = [n for n in named if "/" in n or n.endswith(".py")]
    modules = [n for n in named if re.fullmatch(r"edgepack(\.\w+)+", n)]
    assert paths and modules
    assert [p for p in paths if not list(ROOT.glob(p.rstrip("/")))] == []
    assert [m for m in modules if not _module_exists(m)] == []


def test_ci_runs_the_readme_set_up_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = README.read_text(encoding="utf-8")
    for part in ("set-up", "tests"):
        block = ci.split(f"# --- {part} (README) ---\n", 1)[1].split("\n# ---", 1)[0]
        commands = [line for line in block.splitlines() if line.strip()]
        assert commands and all(f"\n{c}\n" in readme for c in commands), part
