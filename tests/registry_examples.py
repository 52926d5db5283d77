"""Run the example of a registry's package docstring as what it says it is: one new file."""

from __future__ import annotations

import importlib
import sys
import textwrap
from pathlib import Path


def docstring_example(module) -> str:
    """The indented code block after the first ``::`` of ``module``'s docstring."""
    text = module.__doc__.split("::", 1)[1]
    lines = []
    for line in text.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


class ExampleFile:
    """The example written as a module of the registry's package (in a folder of the test's
    own, added to the package's path), found by the registry like any other file."""

    def __init__(self, folder: Path, package: str, registry, name: str, header: str):
        self.package, self.registry, self.name = importlib.import_module(package), registry, name
        self.folder = folder / "registry-example"
        self.folder.mkdir(exist_ok=True)
        self.code = docstring_example(self.package)
        (self.folder / f"{name}.py").write_text(header + "\n\n" + self.code)

    def __enter__(self):
        self.before = set(self.registry.names())
        self.package.__path__.append(str(self.folder))
        self.registry.refresh()
        return self

    def added(self) -> set[str]:
        """The names the example registered."""
        return set(self.registry.names()) - self.before

    def __exit__(self, *exc):
        for name in self.added():
            self.registry.unregister(name)
        self.package.__path__.remove(str(self.folder))
        sys.modules.pop(f"{self.package.__name__}.{self.name}", None)
        return False
