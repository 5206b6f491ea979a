"""Sparsity masks: N:M patterns and unstructured top-k selection (True = prune)."""

from __future__ import annotations

import torch

from rac.nm_pattern import PatternError, parse_pattern  # noqa: F401 (re-exported for the algorithms)


def _check_groups(columns: int, m: int) -> None:
    if columns % m:
        raise PatternError(f"N:M pattern with M={m} needs the input dimension ({columns}) divisible by {m}")


def nm_mask(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Prune the M-N lowest-scoring weights of every group of M consecutive columns of each row."""
    rows, cols = scores.shape
    _check_groups(cols, m)
    groups = scores.reshape(rows, cols // m, m)
    idx = torch.topk(groups, m - n, dim=-1, largest=False).indices
    mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True)
    return mask.reshape(rows, cols)


def prune_count(total: int, sparsity: float) -> int:
    """Number of weights pruned out of `total` at `sparsity` (rounded to nearest)."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"prune.sparsity must be in [0, 1), got {sparsity!r}")
    return round(total * sparsity)


def unstructured_mask(scores: torch.Tensor, sparsity: float, per_row: bool) -> torch.Tensor:
    """Prune exactly round(sparsity * size) lowest scores, per row or over the whole matrix."""
    rows, cols = scores.shape
    if per_row:
        k = prune_count(cols, sparsity)
        mask = torch.zeros_like(scores, dtype=torch.bool)
        if k:
            mask.scatter_(1, torch.topk(scores, k, dim=1, largest=False).indices, True)
        return mask
    k = prune_count(rows * cols, sparsity)
    flat = torch.zeros(rows * cols, dtype=torch.bool, device=scores.device)
    if k:
        flat[torch.topk(scores.reshape(-1), k, largest=False).indices] = True
    return flat.reshape(rows, cols)


def check_nm(weight: torch.Tensor, n: int, m: int) -> bool:
    """True when every group of M consecutive inputs of every row has at most N nonzeros."""
    rows, cols = weight.shape
    if cols % m:
        return False
    nonzero = (weight != 0).reshape(rows, cols // m, m).sum(-1)
    return bool((nonzero <= n).all())


def sparsity_of(weight: torch.Tensor) -> float:
    """Fraction of exactly-zero entries."""
    if weight.numel() == 0:
        return 0.0
    return float((weight == 0).sum().item()) / weight.numel()


class PruneResult:
    """Output of a pruning algorithm: the new weight, its mask (True = pruned) and bookkeeping."""

    __slots__ = ("dampening_used", "loss", "mask", "seconds", "weight")

    def __init__(
        self,
        weight: torch.Tensor,
        mask: torch.Tensor,
        dampening_used: float | None = None,
        seconds: float = 0.0,
        loss: float | None = None,
    ) -> None:
        self.weight = weight
        self.mask = mask
        self.dampening_used = dampening_used  # relative dampening that made H invertible (SparseGPT)
        self.seconds = seconds
        self.loss = loss  # SparseGPT's OBS loss estimate sum(err^2)/2 over the matrix, when known

    def __repr__(self) -> str:
        return (
            f"PruneResult(shape={tuple(self.weight.shape)}, sparsity={sparsity_of(self.weight):.4f}, "
            f"dampening_used={self.dampening_used}, seconds={self.seconds:.4f})"
        )
