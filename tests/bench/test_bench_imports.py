"""Data flows one way: the tool (edgepack.cli, .pipeline, .zoo) -> compress/export/bench, and
bench never imports compress. Checked on what a fresh interpreter has loaded."""

import subprocess
import sys

TOOL = ("edgepack.cli", "edgepack.pipeline", "edgepack.zoo")


def _loaded_after(imports: str, prefixes: tuple[str, ...]) -> str:
    code = (f"import sys, {imports}; "
            f"print(','.join(sorted(m for m in sys.modules if m.startswith({prefixes!r}))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_bench_does_not_import_compress_export_or_the_tool():
    imports = "edgepack.bench, edgepack.bench.runner, edgepack.bench.report, edgepack.bench.envinfo"
    assert _loaded_after(imports, ("edgepack.compress", "edgepack.export") + TOOL) == ""


def test_compress_export_bench_never_import_the_tool():
    imports = ("edgepack.compress, edgepack.export, edgepack.bench, edgepack.compress.quantize, "
               "edgepack.export.torch_export, edgepack.export.hf, edgepack.export.package, "
               "edgepack.export.optimize, edgepack.bench.runner")
    assert _loaded_after(imports, TOOL) == ""
