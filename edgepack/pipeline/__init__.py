"""A recipe end to end: its checks, the teacher, the stages in order, each measured and kept
only on merit, and the run folder with its reports.

- :mod:`.recipe` (the TOML a user writes, checked), :mod:`.user_code` (the builders and
  providers it names: refused by name, then imported), :mod:`.recipe_runner` (a recipe into a
  run folder), :mod:`.run` (the stages in order: :func:`run_pipeline`);
- :mod:`.teacher`, :mod:`.measure`, :mod:`.keep_rule`, :mod:`.quality`,
  :mod:`.robustness_probe`: the teacher, what every stage is measured on, and the rule that
  keeps it;
- :mod:`.resume`, :mod:`.run_folder`, :mod:`.verify`, :mod:`.distributed`: nothing lost,
  and torchrun;
- :mod:`.run_report`, :mod:`.embedding_report`: report.json, report.md and the plots.
"""


def __getattr__(name: str):
    if name == "run_pipeline":   # lazily: importing a submodule must not import them all
        from edgepack.pipeline.run import run_pipeline

        return run_pipeline
    raise AttributeError(f"module 'edgepack.pipeline' has no attribute {name!r}")
