"""Semantic difference of two resolved recipes (after interpolation and defaults)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class _Absent:
    """Marks a key present on one side only."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class RecipeChange:
    """One changed value: dotted path (``evaluate.tasks[0].limit``), old and new (``ABSENT`` if missing)."""

    path: str
    old: Any
    new: Any


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    return type(a) is type(b) and a == b


def _join(prefix: str, key: Any) -> str:
    if isinstance(key, int):
        return f"{prefix}[{key}]"
    return f"{prefix}.{key}" if prefix else str(key)


def _walk(a: Any, b: Any, path: str, out: list[RecipeChange]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            _walk(a.get(key, ABSENT), b.get(key, ABSENT), _join(path, key), out)
    elif (isinstance(a, list) and isinstance(b, list) and (a or b)
          and all(isinstance(x, dict) for x in a + b)):
        for i in range(max(len(a), len(b))):
            _walk(a[i] if i < len(a) else ABSENT, b[i] if i < len(b) else ABSENT, _join(path, i), out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b) or not all(_deep_same(x, y) for x, y in zip(a, b)):
            out.append(RecipeChange(path, a, b))
    elif not _deep_same(a, b):
        out.append(RecipeChange(path, a, b))


def _deep_same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_deep_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_deep_same(x, y) for x, y in zip(a, b))
    return _same(a, b)


def diff_recipes(a: dict, b: dict) -> list[RecipeChange]:
    """Changes from ``a`` to ``b``: mappings by key, lists of mappings item by item, other lists whole.

    Pass ``LoadedRecipe.data`` of both sides so defaults and interpolations are compared, not text.
    ``1`` vs ``1.0`` is no change; ``true`` vs ``1`` is.
    """
    out: list[RecipeChange] = []
    _walk(a, b, "", out)
    return out
