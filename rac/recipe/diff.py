"""Semantic difference of two resolved recipes (after interpolation and defaults).

Mappings are compared key by key. Lists of mappings that all carry a unique identity (``name``,
else ``dataset``, ``path`` or ``id``: eval tasks, prune scopes, calibration sources) are matched by
that identity, so reordering or inserting one item is one change, not one per position; a pure
reordering is reported once at the list's path. Other lists of mappings are compared item by item,
lists of scalars as a whole.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

IDENTITY_KEYS = ("name", "dataset", "path", "id")


class _Absent:
    """Marks a key present on one side only."""

    def __repr__(self) -> str:
        return "<absent>"


ABSENT: Any = _Absent()


@dataclass(frozen=True)
class RecipeChange:
    """One changed value: dotted path (``evaluate.tasks[math500].limit``), old and new (``ABSENT`` if missing)."""

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


def identity_key(items: list) -> str | None:
    """The key that names every item of a list of mappings uniquely, or None."""
    if not items or not all(isinstance(x, dict) for x in items):
        return None
    for key in IDENTITY_KEYS:
        values = [x.get(key) for x in items]
        if all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in values) \
                and len(set(map(str, values))) == len(values):
            return key
    return None


def _walk_named(a: list, b: list, key: str, path: str, out: list[RecipeChange]) -> None:
    old = {str(x[key]): x for x in a}
    new = {str(x[key]): x for x in b}
    for name in list(old) + [n for n in new if n not in old]:
        _walk(old.get(name, ABSENT), new.get(name, ABSENT), f"{path}[{name}]", out)
    common_old = [n for n in old if n in new]
    common_new = [n for n in new if n in old]
    if common_old != common_new:
        out.append(RecipeChange(f"{path} (order by {key})", common_old, common_new))


def _walk(a: Any, b: Any, path: str, out: list[RecipeChange]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            _walk(a.get(key, ABSENT), b.get(key, ABSENT), _join(path, key), out)
        return
    if isinstance(a, list) and isinstance(b, list) and (a or b) and all(isinstance(x, dict) for x in a + b):
        key_a, key_b = identity_key(a), identity_key(b)
        key = key_a if key_a == key_b or not b else key_b if not a else None
        if key is not None:
            _walk_named(a, b, key, path, out)
            return
        for i in range(max(len(a), len(b))):
            _walk(a[i] if i < len(a) else ABSENT, b[i] if i < len(b) else ABSENT, _join(path, i), out)
        return
    if not _deep_same(a, b):
        out.append(RecipeChange(path, a, b))


def _deep_same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_deep_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_deep_same(x, y) for x, y in zip(a, b))
    return _same(a, b)


def diff_recipes(a: dict, b: dict) -> list[RecipeChange]:
    """Changes from ``a`` to ``b`` (see the module docstring for how lists are matched).

    Pass ``LoadedRecipe.data`` of both sides so defaults and interpolations are compared, not text.
    ``1`` vs ``1.0`` is no change; ``true`` vs ``1`` is.
    """
    out: list[RecipeChange] = []
    _walk(a, b, "", out)
    return out


def stage_path(path: str) -> str:
    """A change path as stage ``reads`` match it: list items and the order marker dropped
    (``evaluate.tasks[math500].limit`` -> ``evaluate.tasks.limit``)."""
    return re.sub(r"\[[^\]]*\]| \(order by \w+\)", "", path)
