"""Logs: progress bars only on a terminal, one line per epoch or stage elsewhere, and
``--quiet`` / ``--verbose`` on ``edgepack run`` and ``edgepack demo``."""

import io
import logging
import textwrap

import pytest

from edgepack.compress.trainer import bar_wanted, epoch_line
from edgepack.cli import main as cli_main
from edgepack.cli.logs import PROJECT_LOGGERS

# The demo's stage list at a toy size: every stage that trains, exports or quantizes.
DEMO_LIKE = textwrap.dedent('''
    name = "demo-like"
    tolerance = 1.0
    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 8 }
    train_epochs = 2
    [data]
    args = { samples = 400, transfer_samples = 200, calibration_samples = 32, validation_samples = 100 }
    [[stages]]
    kind = "distill"
    student = { build = "edgepack.zoo:mnist1d_cnn", args = { width = 4 } }
    epochs = 2
    transfer_samples = 200
    [[stages]]
    kind = "prune"
    ratio = 0.25
    finetune_epochs = 2
    [[stages]]
    kind = "export"
    [[stages]]
    kind = "quantize"
    mode = "static"
    [bench]
    min_runs = 5
    min_time_s = 0.01
    [robustness]
    samples = 0
''')
EPOCHS = 2 + 2 + 2     # teacher, distill, prune fine-tuning
STAGES = 4


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.fixture(autouse=True)
def _restore_loggers():
    saved = {n: (logging.getLogger(n).level, list(logging.getLogger(n).handlers),
                 logging.getLogger(n).propagate) for n in PROJECT_LOGGERS}
    yield
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def test_bars_only_on_a_terminal_and_only_when_progress_is_asked_for():
    assert bar_wanted(True, FakeTerminal())
    assert not bar_wanted(False, FakeTerminal())
    assert not bar_wanted(True, io.StringIO())


def test_an_epoch_line_says_loss_accuracy_and_speed():
    line = epoch_line("distill 3/20", {"loss": 0.25, "train_accuracy": 0.9,
                                       "eval_accuracy": 0.95, "samples_per_s": 12345.6})
    assert line == ("distill 3/20: loss 0.2500, train accuracy 0.900, validation accuracy "
                    "0.9500, 12,346 samples/s")



def test_an_epoch_on_soft_targets_alone_shows_no_train_accuracy():
    line = epoch_line("distill 1/6", {"loss": 0.5, "train_accuracy": None,
                                      "samples_per_s": 1000.0})
    assert line == ("distill 1/6: loss 0.5000, train accuracy n/a (no labelled samples), "
                    "1,000 samples/s")

def _run(tmp_path, capsys, *flags):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(DEMO_LIKE)
    argv = ["run", str(recipe), "--out", str(tmp_path / "out"), *flags]
    assert cli_main.main(argv) == 0
    return capsys.readouterr()


def test_a_run_whose_stderr_is_not_a_terminal_writes_lines_not_redraws(tmp_path, capsys):
    captured = _run(tmp_path, capsys)
    err = captured.err
    assert "\r" not in err                      # no progress-bar redraws
    lines = err.splitlines()
    epoch_lines = [line for line in lines if ": loss " in line]
    assert len(epoch_lines) == EPOCHS           # one line per epoch ...
    assert any(line.startswith("distill 2/2: loss") for line in epoch_lines)
    assert len(lines) <= EPOCHS + 3 * STAGES + 4   # ... a few per stage, and nothing else
    assert "final artifact" in captured.out


EXPORT_ONLY = textwrap.dedent('''
    name = "quiet"
    tolerance = 1.0
    [model]
    build = "edgepack.zoo:mnist1d_cnn"
    args = { width = 4 }
    train_epochs = 1
    [data]
    args = { samples = 200, transfer_samples = 0, calibration_samples = 32, validation_samples = 0 }
    [[stages]]
    kind = "export"
    [bench]
    min_runs = 5
    min_time_s = 0.01
    [robustness]
    samples = 0
''')


def test_quiet_prints_nothing_on_stderr_but_the_summary_still_comes(tmp_path, capsys):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(EXPORT_ONLY)
    assert cli_main.main(["run", str(recipe), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "" and "final artifact" in captured.out


@pytest.mark.parametrize("flags, level, progress", [
    ([], logging.INFO, True), (["--quiet"], logging.WARNING, False),
    (["--verbose"], logging.DEBUG, True), (["--no-progress"], logging.INFO, False)])
def test_flags_set_the_level_and_whether_training_shows_progress(flags, level, progress):
    import argparse

    from edgepack.cli.logs import add_log_flags, configure_logging

    parser = argparse.ArgumentParser()
    add_log_flags(parser)
    stream = io.StringIO()
    assert configure_logging(parser.parse_args(flags), stream) is progress
    assert all(logging.getLogger(n).level == level for n in PROJECT_LOGGERS)
    configure_logging(parser.parse_args(flags), stream)   # a second call replaces the first
    ours = [h for h in logging.getLogger("compress").handlers if h.get_name() == "edgepack-cli"]
    assert len(ours) == 1   # other tests' handlers may sit beside it; ours is never doubled
    logging.getLogger("edgepack.compress.trainer").debug("an epoch line")
    assert ("an epoch line" in stream.getvalue()) is (level == logging.DEBUG)


def test_quiet_and_verbose_do_not_mix(capsys):
    with pytest.raises(SystemExit):
        cli_main.main(["demo", "--quiet", "--verbose"])
    assert "not allowed with" in capsys.readouterr().err
