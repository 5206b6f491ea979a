"""The one "did you mean" hint every unknown-name error uses (recipe keys, stages, engines, cells)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import Any


def did_you_mean(name: Any, options: Iterable[Any], cutoff: float = 0.6) -> str:
    """`` (did you mean 'x'?)`` for the option closest to ``name``, or ``""`` when none is close."""
    match = difflib.get_close_matches(str(name), [str(o) for o in options], n=1, cutoff=cutoff)
    return f" (did you mean {match[0]!r}?)" if match else ""
