"""SparseGPT (Frantar & Alistarh, 2023): one-shot OBS pruning with lazy block updates.

The weight is processed transposed ([in, out]) so a column of W is a contiguous row. Within a block
of columns the mask is fixed (unstructured) or chosen every M columns (N:M), and the OBS updates are
done either by a lean two-op column loop (CPU) or, for unstructured masks, by one batched triangular
solve per block (CUDA: removes the per-column kernel launches). Both solve the same equations.
Modules sharing one input (q/k/v, gate/up) share one dampened Cholesky factor and one column loop.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence

import torch

from rac.algorithms.masks import PatternError, PruneResult, parse_pattern, prune_count
from rac.errors import RacError

log = logging.getLogger(__name__)

_MAX_RETRIES = 4
_SUB = 16  # columns per inner sub-block of the column loop
_SOLVE_ELEMS = 1 << 24  # per-chunk size of the batched [rows, B, B] systems (64 MiB in float32)
_SAFE_LOW, _SAFE_HIGH = 2.0**-60, 2.0**60  # |H| range factored as is (else rescaled exactly by 4^-k)


class SparseGPTError(RacError, ValueError):
    """Bad arguments to SparseGPT or a Hessian that stays singular after all dampening retries."""


def _half_exponent(H: torch.Tensor) -> int:
    """k such that H * 4^-k has its largest entry in [1, 4), or 0 when H is already in a safe range.

    Scaling by a power of four is exact in floating point and SparseGPT's masks and updates do not
    depend on the scale of H, so very large (or tiny) but finite Hessians are pruned as is instead
    of overflowing float32 in the mean, the Cholesky or the loss. Inf/NaN entries are an error."""
    bad = int((~torch.isfinite(H)).sum())
    if bad:
        raise SparseGPTError(
            f"Hessian has {bad} non-finite entries (inf/nan) of {H.numel()}: the activations reaching this layer "
            "are not finite (NaN/inf weights upstream, or inputs that overflow); check the model's weights"
        )
    peak = float(H.abs().max()) if H.numel() else 0.0
    if peak == 0.0 or _SAFE_LOW <= peak <= _SAFE_HIGH:
        return 0
    k = math.floor(math.log(peak, 4))
    if abs(k) > 64:
        raise SparseGPTError(
            f"Hessian entries reach {peak:.3g}, beyond what float32 can factor; the calibration activations "
            "of this layer are absurdly large or small (check the model's weights)"
        )
    return k


def _scaled(H: torch.Tensor, k: int) -> torch.Tensor:
    """H * 4^-k, computed in H's own dtype (two exact power-of-two steps, both normal in float32)."""
    return H * 2.0 ** (-k) * 2.0 ** (-k) if k else H


def inverse_hessian_factor(H: torch.Tensor, dampening: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Upper Cholesky factor U of (H + damp*mean(diag H) I)^-1, the dead-input mask and the damp used.

    Dead inputs (diag 0) get H_jj = 1 as in the reference. A failed Cholesky is retried with the
    relative dampening multiplied by 10, up to a few times. Inf/NaN entries are an error; very large
    finite ones are handled by an exact power-of-four rescaling (see :func:`_half_exponent`).
    """
    k = _half_exponent(H)
    H = _scaled(H, k).to(torch.float32).clone()
    diag = H.diagonal()
    dead = diag == 0
    diag.masked_fill_(dead, 1.0)
    mean = diag.mean()
    eye = torch.eye(H.shape[0], dtype=H.dtype, device=H.device)
    damp = float(dampening)
    for _ in range(_MAX_RETRIES + 1):
        # U = flip(L'^-1) with L' L'^T = flip(H): then U^T U = H^-1 and U is upper triangular. One
        # Cholesky and one triangular inverse instead of cholesky + cholesky_inverse + cholesky.
        Hd = H.flip(0, 1)
        Hd.diagonal().add_(damp * mean)
        L, info = torch.linalg.cholesky_ex(Hd)
        if int(info) == 0:
            U = torch.linalg.solve_triangular(L, eye, upper=False).flip(0, 1)
            if bool(torch.isfinite(U).all()):
                if damp != dampening:
                    log.info("SparseGPT: Cholesky needed dampening %.3g (asked %.3g)", damp, dampening)
                return (U * 2.0 ** (-k) if k else U), dead, damp  # the factor of the unscaled H
        damp = damp * 10 if damp > 0 else 1e-4
    raise SparseGPTError(
        f"Hessian is not positive definite even with dampening {damp / 10:.3g} x mean(diag); "
        "increase prune.dampening or the calibration budget"
    )


def _lowest(scores: torch.Tensor, k: int, dim: int | None) -> torch.Tensor:
    """Mask of exactly the k lowest scores (over all entries, or along `dim` per slice), ties broken
    by position; kthvalue + cumsum instead of topk (faster, no host sync)."""
    flat = scores.reshape(-1) if dim is None else scores
    axis = 0 if dim is None else dim
    thresh = flat.kthvalue(k, dim=axis, keepdim=True).values
    below = flat < thresh
    ties = flat == thresh
    need = k - below.sum(axis, keepdim=True)
    mask = below | (ties & (ties.cumsum(axis) <= need))
    return mask.reshape(scores.shape)


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
                mask_t[:, r0:r1] = _lowest(block, k, 0)
        else:
            rows = r1 - r0
            k = prune_count(rows * i2, s) - prune_count(rows * i1, s)
            if k:
                mask_t[:, r0:r1] = _lowest(block, k, None)
    return mask_t


def _loop(w_t: torch.Tensor, coef: torch.Tensor, u: torch.Tensor, e_t: torch.Tensor, lo: int) -> None:
    """OBS steps for columns lo:hi (hi = lo + len(coef), coef = mask / d): e_i = w_i * coef_i and
    columns i+1:hi get -= e_i U[i, i+1:hi] (two kernels per column, no host syncs); then one GEMM
    carries the sub-block's errors to the rest of the block (keeps the column loop in cache)."""
    hi = lo + coef.shape[0]
    for j in range(coef.shape[0]):
        i = lo + j
        torch.mul(w_t[i], coef[j], out=e_t[i])
        if i + 1 < hi:
            w_t[i + 1 : hi].addr_(u[i, i + 1 : hi], e_t[i], alpha=-1)
    if hi < w_t.shape[0]:
        w_t[hi:].addmm_(u[lo:hi, hi:].t(), e_t[lo:hi], alpha=-1)


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
                coef = mask_t / d
                for s0 in range(0, i2 - i1, _SUB):
                    _loop(wb, coef[s0 : s0 + _SUB], ub, e_t, s0)
        else:
            mask_t = torch.zeros_like(wb, dtype=torch.bool)
            for g in range(0, i2 - i1, m):
                scores = wb[g : g + m].square() / d[g : g + m].square()
                idx = torch.topk(scores, m - n, dim=0, largest=False).indices
                mask_t[g : g + m].scatter_(0, idx, True)
                _loop(wb, mask_t[g : g + m] / d[g : g + m], ub, e_t, g)
        wb.masked_fill_(mask_t, 0.0)
        mask_all[i1:i2] = mask_t
        loss += e_t.square().sum(0) / 2
        if i2 < cols:
            w_t[i2:].addmm_(u[i1:i2, i2:].t(), e_t, alpha=-1)
    return mask_all, loss


def _check_args(weights: Sequence[torch.Tensor], H: torch.Tensor, block_size: int, mask_selection: str) -> int:
    if not weights:
        raise SparseGPTError("sparsegpt: no weights given")
    cols = weights[0].shape[-1]
    for i, w in enumerate(weights):
        if w.dim() != 2 or w.shape[1] != cols:
            raise SparseGPTError(f"sparsegpt: weights must be 2-D [out, {cols}], got {tuple(w.shape)}")
        bad = int((~torch.isfinite(w)).sum())
        if bad:
            raise SparseGPTError(f"sparsegpt: weight {i} {list(w.shape)} has {bad} non-finite entries (nan/inf); "
                                 "the OBS updates would spread them over the whole row")
    if tuple(H.shape) != (cols, cols):
        raise SparseGPTError(f"sparsegpt: Hessian must be [{cols}, {cols}], got {tuple(H.shape)}")
    if block_size < 1:
        raise SparseGPTError(f"prune.block_size must be >= 1, got {block_size}")
    if mask_selection not in ("per_block", "per_row"):
        raise SparseGPTError(f"prune.mask_selection must be per_block or per_row, got {mask_selection!r}")
    return cols


def sparsegpt_prune_group(
    weights: Sequence[torch.Tensor],
    H: torch.Tensor,
    *,
    sparsities: Sequence[float] | float = 0.5,
    patterns: Sequence[str | tuple[int, int] | None] | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
    mask_selection: str = "per_block",
    solver: str = "auto",
) -> list[PruneResult]:
    """Prune modules that share one input (and so one H) with one Cholesky and one column loop.

    Each module keeps its own sparsity / N:M pattern and mask selection; the result equals pruning
    each alone. Modules with different patterns run in separate loops over their stacked rows.
    `solver`: "loop", "batched" (unstructured only) or "auto" (batched on CUDA, loop on CPU).
    `seconds` of each result is the group's time split in proportion to the module's rows.
    """
    _check_args(weights, H, block_size, mask_selection)
    k = len(weights)
    sp = [float(sparsities)] * k if isinstance(sparsities, (int, float)) else [float(s) for s in sparsities]
    pats = [None] * k if patterns is None else [parse_pattern(p) for p in patterns]
    if len(sp) != k or len(pats) != k:
        raise SparseGPTError(f"sparsegpt: {k} weights but {len(sp)} sparsities and {len(pats)} patterns")
    for s in sp:
        prune_count(1, s)
    if solver not in ("auto", "loop", "batched"):
        raise SparseGPTError(f"sparsegpt: solver must be auto, loop or batched, got {solver!r}")
    device = weights[0].device
    t0 = time.perf_counter()
    exp4 = _half_exponent(H)  # prune with H * 4^-exp4 (same masks and weights); losses scale back
    u, dead, damp = inverse_hessian_factor(_scaled(H, exp4).to(device), dampening)

    classes: dict[tuple[int, int] | None, list[int]] = {}
    for idx, p in enumerate(pats):
        classes.setdefault(p, []).append(idx)
    out_w: list[torch.Tensor] = [torch.empty(0)] * k
    out_m: list[torch.Tensor] = [torch.empty(0)] * k
    losses = [0.0] * k
    for nm, members in classes.items():
        w_t = torch.cat([weights[i].detach().to(torch.float32).t() for i in members], dim=1).contiguous()
        w_t[dead] = 0.0
        spans, r0 = [], 0
        for i in members:
            rows = weights[i].shape[0]
            spans.append((r0, r0 + rows, sp[i]))
            r0 += rows
        use = solver
        if use == "auto":
            use = "batched" if (device.type == "cuda" and nm is None) else "loop"
        if use == "batched" and nm is not None:
            use = "loop"
        mask_t, loss = _prune_rows(w_t, u, spans, nm, block_size, mask_selection == "per_row", use)
        for i, (a, b, _) in zip(members, spans):
            out_w[i] = w_t[:, a:b].t().contiguous().to(weights[i].dtype)
            out_m[i] = mask_t[:, a:b].t().contiguous()
            losses[i] = float(loss[a:b].sum()) * 4.0**exp4
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - t0
    total_rows = sum(w.shape[0] for w in weights)
    return [
        PruneResult(out_w[i], out_m[i], damp, elapsed * weights[i].shape[0] / total_rows, losses[i])
        for i in range(k)
    ]


def sparsegpt_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    sparsity: float = 0.5,
    pattern: str | tuple[int, int] | None = None,
    block_size: int = 128,
    dampening: float = 0.01,
    mask_selection: str = "per_block",
    solver: str = "auto",
) -> PruneResult:
    """Prune one weight [out, in] with Hessian H [in, in]; an N:M `pattern` overrides `sparsity`."""
    return sparsegpt_prune_group(
        [W],
        H,
        sparsities=[sparsity],
        patterns=[pattern],
        block_size=block_size,
        dampening=dampening,
        mask_selection=mask_selection,
        solver=solver,
    )[0]
