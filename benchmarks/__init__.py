"""Benchmark scripts (run each as ``python benchmarks/NAME.py``; see docs/benchmarks.md).

A regular package, not a namespace one: opacus's wheel installs a top-level ``benchmarks``
package of its own into site-packages, and a regular package anywhere on ``sys.path`` wins
over a namespace folder, so without this file ``from benchmarks import ...`` would find
opacus's.
"""
