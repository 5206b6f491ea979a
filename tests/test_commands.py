"""commands._guard: user errors (RacError) are one line and exit 2; anything else is a bug."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rac import commands
from rac.cli import main
from rac.errors import EXIT_BUG, EXIT_INVALID, RacError, UsageError


def _raising(exc: BaseException):
    def cmd(args) -> int:
        raise exc
    return commands._guard(cmd)


def test_rac_error_is_one_line_and_exit_2(monkeypatch, capsys):
    monkeypatch.setattr(commands, "cmd_show", _raising(UsageError("--cell picks a cell of a grid file")))
    assert main(["show", "recipes/demo.yaml"]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert err.strip() == "error: --cell picks a cell of a grid file"
    assert "Traceback" not in err


@pytest.mark.parametrize("exc", [KeyError("stage"), ValueError("a bug that happens to be a ValueError")])
def test_unexpected_exception_is_not_a_user_error(monkeypatch, capsys, exc):
    monkeypatch.setattr(commands, "cmd_show", _raising(exc))
    assert main(["show", "recipes/demo.yaml"]) == EXIT_BUG
    err = capsys.readouterr().err
    assert f"internal error {type(exc).__name__}" in err and "bug in rac" in err
    crash = Path(re.search(r"traceback in (\S+)", err).group(1))
    assert "Traceback" in crash.read_text() and "Traceback" not in err
    crash.unlink()


def test_unexpected_exception_with_verbose_prints_the_traceback(monkeypatch, capsys):
    monkeypatch.setattr(commands, "cmd_show", _raising(KeyError("stage")))
    assert main(["show", "recipes/demo.yaml", "-v"]) == EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err
    Path(re.search(r"traceback in (\S+)", err).group(1)).unlink()


def test_every_error_class_in_rac_is_a_rac_error():
    """Each ``class *Error(...)`` under rac/ derives from RacError (so ``_guard`` reports it as a user error)."""
    import importlib

    root = Path(commands.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        for name in re.findall(r"^class (\w+Error)\(", path.read_text(), flags=re.M):
            module = ".".join(path.relative_to(root.parent).with_suffix("").parts)
            try:
                cls = getattr(importlib.import_module(module), name)
            except ImportError:  # an optional extra is missing: the class cannot be loaded here
                continue
            found.append(cls)
            assert issubclass(cls, RacError), f"{module}.{name} is not a RacError"
    assert len(found) >= 20
