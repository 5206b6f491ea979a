"""Recipe error types: a source location, one issue, and the error that carries all of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from rac.errors import RacError

CLI_FILE = "<cli>"


@dataclass(frozen=True)
class Location:
    """Where a value was set: a file (or ``<cli>``) and a 1-based line and column.

    For command-line overrides ``line`` is the 1-based index of the override argument.
    """

    file: str
    line: int
    col: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True)
class RecipeIssue:
    """One problem in a recipe: where it was set, the JSON path of the value and a message."""

    location: Location
    path: str  # JSON path, "$" for the root, e.g. "$.prune.scopes[0].sparsity"
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.path}: {self.message}"


class RecipeError(RacError, ValueError):
    """A recipe (or grid) is invalid; ``issues`` lists every problem, ``str()`` has one per line."""

    def __init__(self, issues: Iterable[RecipeIssue]):
        self.issues: list[RecipeIssue] = list(_dedupe(issues))
        super().__init__("\n".join(str(issue) for issue in self.issues))


def _dedupe(issues: Iterable[RecipeIssue]) -> Iterable[RecipeIssue]:
    seen: set[str] = set()
    for issue in issues:
        key = str(issue)
        if key not in seen:
            seen.add(key)
            yield issue


def json_path(dotted: str) -> str:
    """Dotted recipe path (``a.b[0].c``) -> JSON path (``$.a.b[0].c``); ``""`` -> ``$``."""
    if not dotted:
        return "$"
    return "$" + ("" if dotted.startswith("[") else ".") + dotted
