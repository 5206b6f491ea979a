"""SparseGPT (Frantar & Alistarh, 2023): one-shot OBS pruning with lazy block updates.

The weight is processed transposed ([in, out]) so a column of W is a contiguous row. Within a block
of columns the mask is fixed (unstructured) or chosen every M columns (N:M), and the OBS updates are
done either by a lean two-op column loop (CPU) or, for unstructured masks, by one batched triangular
solve per block (CUDA: removes the per-column kernel launches). Both solve the same equations.
Modules sharing one input (q/k/v, gate/up) share one dampened Cholesky factor and one column loop.
"""

from __future__ import annotations

import logging
import time
from typing import Sequence

import torch

from rac.algorithms.masks import PatternError, PruneResult, parse_pattern, prune_count

log = logging.getLogger(__name__)

_MAX_RETRIES = 4
_SOLVE_ELEMS = 1 << 24  # per-chunk size of the batched [rows, B, B] systems (64 MiB in float32)


class SparseGPTError(ValueError):
    """Bad arguments to SparseGPT or a Hessian that stays singular after all dampening retries."""


def inverse_hessian_factor(H: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Upper Cholesky factor U of (H + damp*mean(diag H) I)^-1, the dead-input mask and the damp used.

    Dead inputs (diag 0) get H_jj = 1 as in the reference. A failed Cholesky is retried with the
    relative dampening multiplied by 10, up to a few times.
    """
    H = H.to(torch.float32).clone()
    if not bool(torch.isfinite(H).all()):
        raise SparseGPTError("Hessian has non-finite entries (inf/nan); check the calibration activations")
    diag = H.diagonal()
    dead = diag == 0
    diag.masked_fill_(dead, 1.0)
    mean = diag.mean()
    damp = float(dampening)
    for _ in range(_MAX_RETRIES + 1):
        Hd = H.clone()
        Hd.diagonal().add_(damp * mean)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0 and bool(torch.isfinite(U).all()):
                if damp != dampening:
                    log.info("SparseGPT: Cholesky needed dampening %.3g (asked %.3g)", damp, dampening)
                return U, dead, damp
        damp = damp * 10 if damp > 0 else 1e-4
    raise SparseGPTError(
        f"Hessian is not positive definite even with dampening {damp / 10:.3g} x mean(diag); "
        "increase prune.dampening or the calibration budget"
    )


def _select_unstructured(
    scores_t: torch.Tensor, spans: list[tuple[int, int, float]], i1: int, i2: int, per_row: bool
) -> torch.Tensor:
    """Mask [B, R] for columns i1:i2 with each module's exact cumulative share pruned."""
    mask_t = torch.zeros_like(scores_t, dtype=torch.bool)
    for r0, r1, s in spans:
        block = scores_t[:, r0:r1]
        if per_row:
            k = prune_count(i2, s) - prune_count(i1, s)
            if k:
                idx = torch.topk(block, k, dim=0, largest=False).indices
                mask_t[:, r0:r1].scatter_(0, idx, True)
        else:
            rows = r1 - r0
            k = prune_count(rows * i2, s) - prune_count(rows * i1, s)
            if k:
                flat = torch.zeros(block.numel(), dtype=torch.bool, device=block.device)
                flat[torch.topk(block.reshape(-1), k, largest=False).indices] = True
                mask_t[:, r0:r1] = flat.reshape(block.shape)
    return mask_t


def _loop(w_t: torch.Tensor, coef_t: torch.Tensor, u: torch.Tensor, e_t: torch.Tensor, lo: int, hi: int) -> None:
    """OBS steps for columns lo:hi of a block: e_i = w_i * m_i / d_i; later columns -= e_i U[i, i+1:]."""
    last = w_t.shape[0]
    for i in range(lo, hi):
        torch.mul(w_t[i], coef_t[i], out=e_t[i])
        if i + 1 < last:
            w_t[i + 1 :].addr_(u[i, i + 1 :], e_t[i], alpha=-1)


def _batched_solve(w_t: torch.Tensor, mask_t: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Errors E [B, R] of a whole block at once: per row, (M U^T M + I - M) e = M w (lower-triangular)."""
    w, m = w_t.t(), mask_t.t().to(w_t.dtype)
    rows, b = w.shape
    lower = u.t()
    e = torch.empty_like(w)
    chunk = max(1, _SOLVE_ELEMS // (b * b))
    for r0 in range(0, rows, chunk):
        mc = m[r0 : r0 + chunk]
        a = lower.unsqueeze(0) * mc.unsqueeze(-1)
        a.diagonal(dim1=-2, dim2=-1).add_(1.0 - mc)
        rhs = (w[r0 : r0 + chunk] * mc).unsqueeze(-1)
        e[r0 : r0 + chunk] = torch.linalg.solve_triangular(a, rhs, upper=False).squeeze(-1)
    return e.t()


def _prune_rows(
    w_t: torch.Tensor,
    u: torch.Tensor,
    spans: list[tuple[int, int, float]],
    nm: tuple[int, int] | None,
    block_size: int,
    per_row: bool,
    solver: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prune w_t ([in, rows], modified in place) with factor u; returns (mask_t, per-row loss)."""
    cols, rows = w_t.shape
    d_all = u.diagonal()
    if nm is not None:
        n, m = nm
        if cols % m:
            raise PatternError(f"N:M pattern {n}:{m} needs the input dimension ({cols}) divisible by {m}")
        block_size = max(m, block_size // m * m)
    mask_all = torch.zeros_like(w_t, dtype=torch.bool)
    loss = torch.zeros(rows, dtype=w_t.dtype, device=w_t.device)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        wb, ub, d = w_t[i1:i2], u[i1:i2, i1:i2], d_all[i1:i2, None]
        e_t = torch.empty_like(wb)
        if nm is None:
            mask_t = _select_unstructured(wb.square() / d.square(), spans, i1, i2, per_row)
            if solver == "batched":
                e_t = _batched_solve(wb, mask_t, ub)
                wb.sub_(ub.t() @ e_t)
            else:
                _loop(wb, mask_t / d, ub, e_t, 0, i2 - i1)
        else:
            mask_t = torch.zeros_like(wb, dtype=torch.bool)
            for g in range(0, i2 - i1, m):
                scores = wb[g : g + m].square() / d[g : g + m].square()
                idx = torch.topk(scores, m - n, dim=0, largest=False).indices
                mask_t[g : g + m].scatter_(0, idx, True)
                _loop(wb, mask_t / d, ub, e_t, g, g + m) if False else None
                coef = mask_t[g : g + m] / d[g : g + m]
                _loop_group(wb, coef, ub, e_t, g, g + m)
        wb.masked_fill_(mask_t, 0.0)
        mask_all[i1:i2] = mask_t
        loss += e_t.square().sum(0) / 2
        if i2 < cols:
            w_t[i2:].addmm_(u[i1:i2, i2:].t(), e_t, alpha=-1)
    return mask_all, loss


def _loop_group(w_t, coef_g, u, e_t, lo, hi) -> None:
    last = w_t.shape[0]
    for j, i in enumerate(range(lo, hi)):
        torch.mul(w_t[i], coef_g[j], out=e_t[i])
        if i + 1 < last:
            w_t[i + 1 :].addr_(u[i, i + 1 :], e_t[i], alpha=-1)
