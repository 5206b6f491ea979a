"""Helpers for recipe tests: write YAML files with known line numbers."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"
EXAMPLE = DATA / "smollm2_rac.yaml"


@pytest.fixture
def write(tmp_path: Path):
    """write(name, text) -> path; text is dedented, line 1 is the first line after the opening quotes."""

    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return _write


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run in tmp_path so relative paths in messages are stable."""
    monkeypatch.chdir(tmp_path)
