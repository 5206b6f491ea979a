"""Prune scopes: which (decoder block, module) pairs each scope selects and with which settings.

Pure Python (no torch): used by the prune stage, ``rac plan`` and recipe validation.

Block specs (``n`` = number of decoder blocks):
- ``all``; thirds with ``t = n // 3``: ``first_third`` = [0, t), ``last_third`` = [n - t, n),
  ``middle_third`` = the rest [t, n - t). With 28 blocks: 0-8, 9-18, 19-27 (the middle takes the
  remainder; with n < 3 the first and last thirds are empty).
- ``"[lo, hi)"``: half-open index range.
- a list of block indices.
- ``{from: a, to: b}``: fractions of the depth; block i is selected when ``a <= i / n < b``, i.e.
  ``[ceil(a * n), ceil(b * n))``, so adjacent fractions (``0-0.5``, ``0.5-1``) tile without overlap.
``lm_head`` and ``embed_tokens`` live outside the blocks and use block index -1.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from rac.errors import RacError
from rac.nm_pattern import PatternError, parse_pattern  # noqa: F401 (part of the recipe API)

MODULE_GROUPS: dict[str, tuple[str, ...]] = {
    "attn": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "mlp": ("gate_proj", "up_proj", "down_proj"),
}
PROJECTIONS = MODULE_GROUPS["attn"] + MODULE_GROUPS["mlp"]
OUTSIDE_BLOCKS = ("lm_head", "embed_tokens")
NAMED_BLOCKS = ("all", "first_third", "middle_third", "last_third")
DEFAULT_SCOPE: dict[str, Any] = {"name": "all", "modules": ["attn", "mlp"], "blocks": "all"}
_RANGE = re.compile(r"^\[\s*(\d+)\s*,\s*(\d+)\s*\)$")
_EPS = 1e-9


class ScopeError(RacError, ValueError):
    """A malformed block spec, module name or N:M pattern."""


class ScopeOverlapError(RacError, ValueError):
    """Two scopes select the same (block, module) and ``precedence`` does not decide."""

    def __init__(self, first: str, second: str, block: int, module: str, second_index: int):
        self.first, self.second, self.block, self.module = first, second, block, module
        self.second_index = second_index
        where = module if block < 0 else f"block {block} {module}"
        super().__init__(f"scopes {first!r} and {second!r} both select {where}; give them distinct "
                         f"'precedence' values (the higher wins) or make them disjoint")


@dataclass(frozen=True)
class ScopeAssignment:
    """The settings a (block, module) pair is pruned with, and the scope that decided them."""

    scope: str
    method: str
    sparsity: float
    pattern: tuple[int, int] | None
    precedence: int | None


def select_blocks(spec: Any, n_blocks: int, strict: bool = True) -> list[int]:
    """Sorted block indices selected by ``spec`` in a model with ``n_blocks`` decoder blocks.

    ``strict``: indices or ranges beyond the model raise ScopeError; otherwise they are clipped
    (used when validating a recipe whose model depth is not known yet).
    """
    n = int(n_blocks)
    third = n // 3
    if spec == "all":
        return list(range(n))
    if spec == "first_third":
        return list(range(third))
    if spec == "middle_third":
        return list(range(third, n - third))
    if spec == "last_third":
        return list(range(n - third, n))
    if isinstance(spec, str):
        match = _RANGE.match(spec)
        if not match:
            raise ScopeError(f"blocks {spec!r} is not one of {', '.join(NAMED_BLOCKS)} or a range '[lo, hi)'")
        lo, hi = int(match.group(1)), int(match.group(2))
        if lo >= hi:
            raise ScopeError(f"block range {spec!r} is empty: lo must be < hi")
        if strict and hi > n:
            raise ScopeError(f"block range {spec!r} exceeds the model's {n} blocks")
        return list(range(min(lo, n), min(hi, n)))
    if isinstance(spec, list):
        if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in spec):
            raise ScopeError(f"block list {spec!r} must hold non-negative integers")
        if strict and any(i >= n for i in spec):
            raise ScopeError(f"block list {spec!r} names blocks beyond the model's {n} blocks (0-{n - 1})")
        return sorted({i for i in spec if i < n})
    if isinstance(spec, dict) and set(spec) == {"from", "to"}:
        lo_f, hi_f = spec["from"], spec["to"]
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in (lo_f, hi_f)):
            raise ScopeError(f"block fractions {spec!r} must be numbers in [0, 1]")
        if lo_f >= hi_f:
            raise ScopeError(f"block fractions {spec!r}: 'from' must be < 'to'")
        lo, hi = math.ceil(lo_f * n - _EPS), math.ceil(hi_f * n - _EPS)
        return list(range(max(lo, 0), min(hi, n)))
    raise ScopeError(f"cannot read blocks {spec!r}: use {', '.join(NAMED_BLOCKS)}, '[lo, hi)', "
                     "a list of indices or {from: a, to: b}")


def expand_modules(names: Iterable[str]) -> list[str]:
    """Module groups -> projection names (``attn`` -> q,k,v,o; ``mlp`` -> gate,up,down), de-duplicated.

    ``lm_head`` and ``embed_tokens`` are included only when named.
    """
    out: list[str] = []
    for name in names:
        if name in MODULE_GROUPS:
            expanded: tuple[str, ...] = MODULE_GROUPS[name]
        elif name in PROJECTIONS or name in OUTSIDE_BLOCKS:
            expanded = (name,)
        else:
            raise ScopeError(f"unknown module {name!r}; use attn, mlp, {', '.join(PROJECTIONS)}, "
                             f"{', '.join(OUTSIDE_BLOCKS)}")
        out.extend(m for m in expanded if m not in out)
    return out


def scope_list(prune: dict) -> list[dict]:
    """The scopes of a prune section (the default single scope when absent)."""
    scopes = prune.get("scopes")
    return list(scopes) if scopes else [dict(DEFAULT_SCOPE)]


def assign_scopes(prune: dict, n_blocks: int, strict: bool = True) -> dict[tuple[int, str], ScopeAssignment]:
    """Map every selected (block, module) to its ScopeAssignment; block -1 = lm_head/embed_tokens.

    Scope keys left null take the prune-level ``method``/``sparsity``/``pattern``. Where scopes
    overlap, the one with the higher ``precedence`` wins; equal or missing precedences raise
    ScopeOverlapError naming both scopes and the (block, module).
    """
    out: dict[tuple[int, str], ScopeAssignment] = {}
    for index, scope in enumerate(scope_list(prune)):
        name = str(scope.get("name") or f"scope{index}")
        pattern = scope.get("pattern") if scope.get("pattern") is not None else prune.get("pattern")
        sparsity = scope.get("sparsity") if scope.get("sparsity") is not None else prune.get("sparsity", 0.5)
        assignment = ScopeAssignment(
            scope=name,
            method=str(scope.get("method") or prune.get("method") or "sparsegpt"),
            sparsity=float(sparsity if sparsity is not None else 0.5),
            pattern=parse_pattern(pattern),
            precedence=scope.get("precedence"),
        )
        modules = expand_modules(scope.get("modules") or DEFAULT_SCOPE["modules"])
        blocks = select_blocks(scope.get("blocks", "all"), n_blocks, strict=strict)
        keys = [(-1, m) for m in modules if m in OUTSIDE_BLOCKS]
        keys += [(b, m) for b in blocks for m in modules if m not in OUTSIDE_BLOCKS]
        for key in keys:
            current = out.get(key)
            if current is None:
                out[key] = assignment
                continue
            p_old, p_new = current.precedence, assignment.precedence
            if p_old is None or p_new is None or p_old == p_new:
                raise ScopeOverlapError(current.scope, name, key[0], key[1], index)
            if p_new > p_old:
                out[key] = assignment
    return out
