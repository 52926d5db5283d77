"""Data flows one way: edgepack -> compress/export/bench, and bench never imports compress."""

import subprocess
import sys


def test_bench_does_not_import_compress_or_edgepack():
    code = ("import sys, bench, bench.runner, bench.report, bench.envinfo; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('compress', 'edgepack')); "
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_compress_export_bench_never_import_edgepack():
    code = ("import sys, compress, export, bench, compress.quantize, export.torch_export, "
            "export.hf, export.package, export.optimize, bench.runner; "
            "print(','.join(sorted(m for m in sys.modules if m.startswith('edgepack'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
