"""ALPS (Meng et al., 2024): one-shot pruning by ADMM on the layer objective, then PCG on the support.

The layer problem is min_W 1/2 tr((W - W0) H (W - W0)^T) subject to a sparsity pattern, with
H = sum_t w_t x_t x_t^T the (weighted) input Gram matrix. SparseGPT solves it greedily column by
column; ALPS treats it as a whole:

1. Scale inputs so diag(H) = 1 (the mask is then chosen on comparable magnitudes), dampen H like
   SparseGPT (``dampening`` x mean diagonal) and eigendecompose it once.
2. ADMM on W = D (W free, D in the sparse set): the W-step is one solve with H + rho I, cheap for
   every rho through the eigenbasis; the D-step projects W + U on the sparse set (layer-wide top-k,
   per-row top-k or N:M); the penalty rho grows faster while the support still moves and the loop
   stops once the support is stable.
3. With the support fixed, preconditioned conjugate gradients (Jacobi) minimise the objective over
   the kept weights, row by row in one batch, starting from the ADMM solution.

Everything is pure tensor math; the result is the same ``PruneResult`` SparseGPT returns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from rac.algorithms.masks import PruneResult, parse_pattern, prune_count
from rac.errors import RacError


class ALPSError(RacError, ValueError):
    """Bad arguments to ALPS (shapes, sparsity, a non-finite Hessian or weight)."""


@dataclass(frozen=True)
class ALPSOptions:
    """Solver knobs; the defaults follow the ALPS paper's schedule (rho0 0.1, growth 1.1-1.3 every 3 steps)."""

    rho0: float = 0.1
    max_iters: int = 300
    check_every: int = 3
    pcg_iters: int = 100
    pcg_tol: float = 1e-7


def _project(values: torch.Tensor, sparsity: float, nm: tuple[int, int] | None, per_row: bool) -> torch.Tensor:
    """Keep-mask (True = kept) of the largest |values| under the pattern."""
    rows, cols = values.shape
    score = values.abs()
    if nm:
        n, m = nm
        groups = score.reshape(rows, cols // m, m)
        idx = torch.topk(groups, n, dim=-1).indices
        return torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, idx, True).reshape(rows, cols)
    if per_row:
        keep = cols - prune_count(cols, sparsity)
        idx = torch.topk(score, keep, dim=1).indices
        return torch.zeros_like(score, dtype=torch.bool).scatter_(1, idx, True)
    keep = score.numel() - prune_count(score.numel(), sparsity)
    flat = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    flat[torch.topk(score.reshape(-1), keep).indices] = True
    return flat.reshape(rows, cols)


def _growth(changed: int, kept: int) -> float:
    """ALPS's penalty schedule: grow rho slowly while many weights still enter or leave the support."""
    if changed > 0.1 * kept:
        return 1.1
    if changed > 0.005 * kept:
        return 1.2
    return 1.3


def _pcg(x: torch.Tensor, keep: torch.Tensor, Hd: torch.Tensor, B: torch.Tensor, iters: int, tol: float) -> torch.Tensor:
    """Minimise 1/2 x Hd x^T - B x^T per row over the kept entries (Jacobi-preconditioned CG, batched)."""
    keep_f = keep.to(x.dtype)
    inv_diag = 1.0 / Hd.diagonal().clamp_min(1e-12)
    x = x * keep_f
    r = (B - x @ Hd) * keep_f
    z = r * inv_diag
    p = z.clone()
    rz = (r * z).sum(1)
    stop = tol * (B * keep_f).square().sum(1).clamp_min(1e-30)
    for _ in range(iters):
        if bool((r.square().sum(1) <= stop).all()):
            break
        Ap = (p @ Hd) * keep_f
        pAp = (p * Ap).sum(1)
        alpha = torch.where(pAp > 0, rz / pAp.clamp_min(1e-30), torch.zeros_like(pAp))
        x = x + alpha[:, None] * p
        r = r - alpha[:, None] * Ap
        z = r * inv_diag
        rz_new = (r * z).sum(1)
        beta = torch.where(rz > 0, rz_new / rz.clamp_min(1e-30), torch.zeros_like(rz))
        p = z + beta[:, None] * p
        rz = rz_new
    return x * keep_f


def _check(W: torch.Tensor, H: torch.Tensor, sparsity: float) -> None:
    if W.dim() != 2 or H.shape != (W.shape[1], W.shape[1]):
        raise ALPSError(f"alps: need W [out, in] and H [in, in], got {tuple(W.shape)} and {tuple(H.shape)}")
    if not 0.0 <= sparsity < 1.0:
        raise ALPSError(f"alps: sparsity must be in [0, 1), got {sparsity!r}")
    if not bool(torch.isfinite(H).all()):
        raise ALPSError("alps: the Hessian has non-finite entries (inf/nan); check the calibration activations")
    if not bool(torch.isfinite(W).all()):
        raise ALPSError("alps: the weight has non-finite entries (inf/nan)")


def alps_prune(
    W: torch.Tensor,
    H: torch.Tensor,
    *,
    sparsity: float = 0.5,
    pattern: str | tuple[int, int] | None = None,
    dampening: float = 0.01,
    per_row: bool = False,
    options: ALPSOptions | None = None,
) -> PruneResult:
    """Prune W [out, in] against input Gram H [in, in]; an N:M ``pattern`` overrides ``sparsity``.

    Unstructured masks are chosen over the whole matrix (ALPS's choice) or per row (``per_row``).
    ``loss`` is the exact objective 1/2 tr((W_hat - W) H (W_hat - W)^T) with the undampened H.
    """
    opts = options or ALPSOptions()
    _check(W, H, sparsity)
    nm = parse_pattern(pattern)
    if nm and W.shape[1] % nm[1]:
        raise ALPSError(f"alps: N:M pattern with M={nm[1]} needs the input dimension ({W.shape[1]}) divisible by it")
    t0 = time.perf_counter()
    W0 = W.detach().to(torch.float32)
    H32 = H.detach().to(device=W0.device, dtype=torch.float32)
    if not nm and prune_count(W0.numel() if not per_row else W0.shape[1], sparsity) == 0:
        return PruneResult(W.detach().clone(), torch.zeros_like(W0, dtype=torch.bool), dampening, 0.0, 0.0)

    diag = H32.diagonal().clone()
    scale = torch.where(diag > 0, diag.sqrt(), torch.ones_like(diag))
    Hd = H32 / scale[:, None] / scale[None, :]
    lam = float(dampening) * float(Hd.diagonal().mean())
    Hd.diagonal().add_(lam if lam > 0 else 1e-8)
    Wn = W0 * scale[None, :]
    B = Wn @ Hd
    evals, Q = torch.linalg.eigh(Hd)
    evals = evals.clamp_min(0)

    keep = _project(Wn, sparsity, nm, per_row)
    D = Wn * keep
    U = torch.zeros_like(Wn)
    rho = opts.rho0
    last = keep
    kept = int(keep.sum())
    for step in range(1, opts.max_iters + 1):
        Wk = ((B + rho * (D - U)) @ Q) / (evals + rho)[None, :] @ Q.T
        keep = _project(Wk + U, sparsity, nm, per_row)
        D = (Wk + U) * keep
        U = U + Wk - D
        if step % opts.check_every == 0:
            changed = int((keep ^ last).sum())
            if changed == 0 and step >= 2 * opts.check_every:
                break
            factor = _growth(changed, kept)
            rho *= factor
            U = U / factor  # the scaled dual U = V / rho keeps V fixed when rho changes
            last = keep

    Wn_hat = _pcg(D, keep, Hd, B, opts.pcg_iters, opts.pcg_tol)
    W_hat = Wn_hat / scale[None, :]
    delta = W_hat - W0
    loss = 0.5 * float(((delta @ H32) * delta).sum())
    return PruneResult(W_hat.to(W.dtype), ~keep, dampening, time.perf_counter() - t0, loss)
