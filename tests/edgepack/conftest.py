"""Fixtures of the command-line and pipeline tests (helpers live in tests/edgepack/helpers.py)."""

import pytest


@pytest.fixture
def no_teacher(monkeypatch):
    """Fails the test if the teacher is prepared: every check must come before training."""
    def refuse(*_args, **_kwargs):
        raise AssertionError("the teacher was prepared before the checks")
    monkeypatch.setattr("edgepack.pipeline.recipe_runner.prepare_teacher", refuse)
