"""Wanda (Sun et al., 2024): prune by |W| * ||x||, compared within each output row."""

from __future__ import annotations

import time

import torch

from rac.algorithms.masks import PruneResult, nm_mask, parse_pattern, unstructured_mask


def wanda_prune(
    W: torch.Tensor,
    act_sq_norm: torch.Tensor,
    *,
    sparsity: float = 0.5,
    pattern: str | tuple[int, int] | None = None,
) -> PruneResult:
    """Prune W [out, in] with score |W_ij| * sqrt(act_sq_norm_j); act_sq_norm = diag(H) = sum_t w_t x_tj^2.

    Unstructured: each row drops exactly round(sparsity * in) weights. An N:M `pattern` overrides it.
    """
    if W.dim() != 2 or act_sq_norm.shape != (W.shape[1],):
        raise ValueError(
            f"wanda: need W [out, in] and act_sq_norm [in], got {tuple(W.shape)} and {tuple(act_sq_norm.shape)}"
        )
    t0 = time.perf_counter()
    norm = act_sq_norm.to(device=W.device, dtype=torch.float32).clamp_min(0).sqrt()
    scores = W.detach().float().abs() * norm.unsqueeze(0)
    nm = parse_pattern(pattern)
    mask = nm_mask(scores, *nm) if nm else unstructured_mask(scores, sparsity, per_row=True)
    weight = W.detach().masked_fill(mask, 0)
    return PruneResult(weight, mask, None, time.perf_counter() - t0)
