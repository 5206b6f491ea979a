"""Magnitude pruning: drop the smallest |W|, per row, per matrix, or in N:M groups."""

from __future__ import annotations

import time

import torch

from rac.algorithms.masks import PruneResult, nm_mask, parse_pattern, unstructured_mask


def magnitude_prune(
    W: torch.Tensor,
    *,
    sparsity: float = 0.5,
    pattern: str | tuple[int, int] | None = None,
    per_row: bool = False,
) -> PruneResult:
    """Zero the round(sparsity * size) smallest-magnitude weights of W (per row when `per_row`).

    An N:M `pattern` (N kept in every M consecutive inputs) overrides `sparsity`.
    """
    if W.dim() != 2:
        raise ValueError(f"magnitude: need a 2-D weight [out, in], got {tuple(W.shape)}")
    t0 = time.perf_counter()
    scores = W.detach().float().abs()
    nm = parse_pattern(pattern)
    mask = nm_mask(scores, *nm) if nm else unstructured_mask(scores, sparsity, per_row=per_row)
    weight = W.detach().masked_fill(mask, 0)
    return PruneResult(weight, mask, None, time.perf_counter() - t0)
