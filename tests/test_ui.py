"""Console logging: a failing stage's traceback goes to run.log, not to the console (unless -v)."""

from __future__ import annotations

import io
import logging

import pytest

from rac import ui


@pytest.fixture()
def rac_logger(monkeypatch):
    logger = logging.getLogger("rac")
    monkeypatch.setattr(logger, "handlers", [])  # a fresh console handler for this test
    monkeypatch.setattr(logger, "level", logger.level)
    return logger


def _fail(logger: logging.Logger) -> None:
    try:
        raise OSError(28, "No space left on device")
    except OSError:
        logger.getChild("run").exception("stage prune failed")


@pytest.mark.parametrize("verbose", [False, True])
def test_console_shows_tracebacks_only_when_verbose_and_run_log_always(rac_logger, tmp_path, monkeypatch, verbose):
    stream = io.StringIO()
    monkeypatch.setattr(ui.sys, "stderr", stream)
    ui.setup_logging(verbose=verbose)
    run_log = logging.FileHandler(tmp_path / "run.log")  # as rac.pipeline.run adds it, after the console one
    rac_logger.addHandler(run_log)
    try:
        _fail(rac_logger)
    finally:
        run_log.close()
        rac_logger.removeHandler(run_log)
    console = stream.getvalue()
    assert "stage prune failed" in console
    assert ("Traceback" in console) is verbose
    text = (tmp_path / "run.log").read_text()
    assert "Traceback" in text and "No space left on device" in text


def test_a_later_quiet_command_does_not_inherit_verbose_logging(rac_logger, monkeypatch):
    """`rac validate -v` then `rac run` in one process (tests, notebooks): no tracebacks on the console."""
    ui.setup_logging(verbose=True)
    stream = io.StringIO()
    monkeypatch.setattr(ui.sys, "stderr", stream)  # the second command's stderr
    ui.setup_logging(verbose=False)
    _fail(rac_logger)
    assert "stage prune failed" in stream.getvalue() and "Traceback" not in stream.getvalue()
    assert sum(getattr(h, "_rac_console", False) for h in rac_logger.handlers) == 1
