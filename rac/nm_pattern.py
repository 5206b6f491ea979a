"""The one N:M sparsity pattern parser (recipe validation, scopes and the pruning algorithms).

Torch-free, so the recipe layer can use it. An N:M pattern keeps N weights in every group of M
consecutive inputs; ``0 < N < M``.
"""

from __future__ import annotations

import re
from typing import Any

from rac.errors import RacError

_PATTERN = re.compile(r"^(\d+):(\d+)$")


class PatternError(RacError, ValueError):
    """An N:M pattern that is not ``"N:M"`` with integers ``0 < N < M`` (or a shape it does not fit)."""


def parse_pattern(pattern: Any) -> tuple[int, int] | None:
    """``"2:4"`` or ``(2, 4)`` -> ``(2, 4)``; ``None`` stays ``None``; anything else raises PatternError."""
    if pattern is None:
        return None
    if isinstance(pattern, (tuple, list)) and len(pattern) == 2 and all(
            isinstance(p, int) and not isinstance(p, bool) for p in pattern):
        n, m = int(pattern[0]), int(pattern[1])
    else:
        match = _PATTERN.match(pattern.replace(" ", "")) if isinstance(pattern, str) else None
        if not match:
            raise PatternError(f"N:M pattern must look like '2:4', got {pattern!r}")
        n, m = int(match.group(1)), int(match.group(2))
    if not 0 < n < m:
        raise PatternError(f"N:M pattern {pattern!r} needs 0 < N < M")
    return n, m
