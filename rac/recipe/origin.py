"""Where each value of a resolved recipe comes from: a file and line, a ``<cli>`` override, or a default.

Reads the loader's source map (``LoadedRecipe.source_map``: dotted path -> the Location of the last
file or override that set it). A value the user never wrote (absent from ``LoadedRecipe.raw``) is a
schema default; a value inside a list or mapping set as a whole is attributed to that container.
"""

from __future__ import annotations

from typing import Any

from rac.recipe.source import join_path, split_path

DEFAULT = "default"


def _written(raw: Any, tokens: list) -> bool:
    node = raw
    for tok in tokens:
        if isinstance(node, dict) and tok in node:
            node = node[tok]
        elif isinstance(node, list) and isinstance(tok, int) and tok < len(node):
            node = node[tok]
        else:
            return False
    return True


def origin_of(loaded: Any, dotted: str) -> str:
    """``file:line``, ``<cli>:N`` or ``default`` for one dotted path of ``loaded.data``."""
    tokens = split_path(dotted)
    if not _written(loaded.raw, tokens):
        return DEFAULT
    while tokens:
        key = join_path(tokens)
        if key in loaded.source_map:
            location = loaded.source_map[key]
            return f"{location.file}:{location.line}"
        tokens.pop()
    location = loaded.locate("")
    return f"{location.file}:{location.line}"


def origins(loaded: Any) -> dict[str, str]:
    """Origin of every leaf (scalars, and lists of scalars as a whole) of ``loaded.data``, by dotted path."""
    out: dict[str, str] = {}

    def walk(value: Any, tokens: list) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(sub, tokens + [key])
        elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
            for i, sub in enumerate(value):
                walk(sub, tokens + [i])
        else:
            path = join_path(tokens)
            out[path] = origin_of(loaded, path)

    walk(loaded.data, [])
    return out
