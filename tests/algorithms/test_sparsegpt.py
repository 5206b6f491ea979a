"""SparseGPT against a dense reference from the paper's equations, and against Wanda / magnitude."""

from __future__ import annotations

import pytest
import torch

from rac.algorithms.magnitude import magnitude_prune
from rac.algorithms.masks import check_nm, nm_mask, parse_pattern, prune_count
from rac.algorithms.sparsegpt import (
    SparseGPTError,
    inverse_hessian_factor,
    sparsegpt_prune,
    sparsegpt_prune_group,
)
from rac.algorithms.wanda import wanda_prune


def correlated_inputs(n: int, d: int, rank: int = 6, seed: int = 0) -> torch.Tensor:
    """X [n, d] with a random low-rank-plus-noise covariance (what real activations look like)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, d, generator=g) * torch.rand(d, generator=g) * 3
    return torch.randn(n, rank, generator=g) @ basis + 0.1 * torch.randn(n, d, generator=g)


def recon(W, W_hat, X):
    return float(((W - W_hat) @ X.t()).pow(2).sum())


def dense_reference(W, H, sparsity, pattern, block, damp):
    """Paper's Algorithm without Cholesky or lazy batching: OBS with the full inverse Hessian of the
    remaining columns, eliminated one column at a time (Gaussian elimination), float64."""
    W = W.double().clone()
    H = H.double().clone()
    rows, cols = W.shape
    dead = H.diagonal() == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * H.diagonal().mean() * torch.eye(cols, dtype=H.dtype)
    Hinv = torch.linalg.inv(H)
    seq = []  # row j of the inverse Hessian of the columns j.. (after eliminating 0..j-1)
    for j in range(cols):
        seq.append(Hinv[j].clone())
        Hinv = Hinv - torch.outer(Hinv[:, j], Hinv[j]) / Hinv[j, j]
    diag = torch.stack([seq[j][j] for j in range(cols)])
    nm = parse_pattern(pattern)
    mask = torch.zeros(rows, cols, dtype=torch.bool)
    for j in range(cols):
        if nm is None and j % block == 0:
            j2 = min(j + block, cols)
            scores = W[:, j:j2] ** 2 / diag[j:j2]
            k = prune_count(rows * j2, sparsity) - prune_count(rows * j, sparsity)
            flat = torch.zeros(scores.numel(), dtype=torch.bool)
            flat[torch.topk(scores.flatten(), k, largest=False).indices] = True
            mask[:, j:j2] = flat.reshape(scores.shape)
        if nm is not None and j % nm[1] == 0:
            mask[:, j : j + nm[1]] = nm_mask(W[:, j : j + nm[1]] ** 2 / diag[j : j + nm[1]], *nm)
        err = W[:, j] * mask[:, j] / diag[j]
        W[:, j:] -= torch.outer(err, seq[j][j:])
        W[:, j][mask[:, j]] = 0
    return W.float(), mask


@pytest.mark.parametrize("pattern", [None, "2:4", "4:8"])
@pytest.mark.parametrize("solver", ["loop", "batched"])
def test_matches_dense_reference(pattern, solver):
    torch.manual_seed(0)
    X = correlated_inputs(256, 32)
    H = X.t() @ X
    H[:, 5] = H[5, :] = 0  # a dead input
    W = torch.randn(12, 32)
    ref_w, ref_mask = dense_reference(W, H, 0.5, pattern, 16, 0.01)
    out = sparsegpt_prune(W, H, sparsity=0.5, pattern=pattern, block_size=16, solver=solver)
    assert torch.equal(out.mask, ref_mask)
    torch.testing.assert_close(out.weight, ref_w, rtol=1e-4, atol=1e-4)
    assert (out.weight[:, 5] == 0).all()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(sparsity=0.5, mask_selection="per_block"),
        dict(sparsity=0.6, mask_selection="per_row"),
        dict(sparsity=0.37, mask_selection="per_block", block_size=24),
        dict(pattern="2:4"),
        dict(pattern="4:8", block_size=20),
    ],
)
def test_exact_sparsity_and_pattern(kwargs):
    torch.manual_seed(1)
    X = correlated_inputs(200, 64)
    W = torch.randn(24, 64)
    out = sparsegpt_prune(W, X.t() @ X, **kwargs)
    zeros = out.weight == 0
    assert torch.equal(zeros, out.mask)
    if "pattern" in kwargs:
        n, m = parse_pattern(kwargs["pattern"])
        assert check_nm(out.weight, n, m)
        assert (zeros.reshape(24, -1, m).sum(-1) == m - n).all()
    elif kwargs["mask_selection"] == "per_row":
        assert (zeros.sum(1) == round(64 * kwargs["sparsity"])).all()
    else:
        assert int(zeros.sum()) == round(24 * 64 * kwargs["sparsity"])


@pytest.mark.parametrize("pattern", [None, "2:4"])
def test_reconstruction_beats_wanda_and_magnitude(pattern):
    torch.manual_seed(2)
    X = correlated_inputs(512, 64, seed=3)
    H = X.t() @ X
    W = torch.randn(48, 64)
    sgpt = recon(W, sparsegpt_prune(W, H, pattern=pattern, block_size=32).weight, X)
    wanda = recon(W, wanda_prune(W, H.diagonal(), sparsity=0.5, pattern=pattern).weight, X)
    mag = recon(W, magnitude_prune(W, sparsity=0.5, pattern=pattern).weight, X)
    assert sgpt < 0.7 * wanda and sgpt < 0.7 * mag


def test_group_equals_separate():
    torch.manual_seed(4)
    X = correlated_inputs(300, 64)
    H = X.t() @ X
    Ws = [torch.randn(32, 64), torch.randn(16, 64), torch.randn(16, 64), torch.randn(8, 64)]
    sp = [0.5, 0.3, 0.5, 0.7]
    pats = [None, None, "2:4", None]
    sels = "per_block"
    group = sparsegpt_prune_group(Ws, H, sparsities=sp, patterns=pats, block_size=16, mask_selection=sels)
    for W, s, p, g in zip(Ws, sp, pats, group):
        alone = sparsegpt_prune(W, H, sparsity=s, pattern=p, block_size=16, mask_selection=sels)
        assert torch.equal(g.mask, alone.mask)
        torch.testing.assert_close(g.weight, alone.weight, rtol=1e-5, atol=1e-5)
        assert g.dampening_used == alone.dampening_used


def test_cholesky_retry_on_singular_hessian():
    torch.manual_seed(5)
    X = torch.randn(4, 16)  # rank 4 of 16: singular H
    H = X.t() @ X
    W = torch.randn(8, 16)
    out = sparsegpt_prune(W, H, dampening=0.0)
    assert out.dampening_used > 0 and out.mask.sum() == 64
    with pytest.raises(SparseGPTError, match="non-finite"):
        inverse_hessian_factor(H * float("nan"), 0.01)
    bad = -torch.eye(16)  # negative definite: no dampening within the retries helps
    with pytest.raises(SparseGPTError, match="not positive definite"):
        inverse_hessian_factor(bad, 0.01)


def test_bad_arguments():
    H = torch.eye(8)
    with pytest.raises(SparseGPTError, match="Hessian must be"):
        sparsegpt_prune(torch.randn(4, 8), torch.eye(6))
    with pytest.raises(ValueError, match="sparsity"):
        sparsegpt_prune(torch.randn(4, 8), H, sparsity=1.5)
    with pytest.raises(ValueError, match="divisible"):
        sparsegpt_prune(torch.randn(4, 6), torch.eye(6), pattern="2:4")
    with pytest.raises(SparseGPTError, match="mask_selection"):
        sparsegpt_prune(torch.randn(4, 8), H, mask_selection="global")


# -- non-finite inputs are errors; huge but finite Hessians are pruned, not misreported -----------
def test_nan_weights_are_an_error_not_passed_through():
    torch.manual_seed(0)
    X = torch.randn(64, 16)
    W = torch.randn(8, 16)
    W[3, 5] = float("nan")
    with pytest.raises(SparseGPTError, match=r"weight 0 \[8, 16\] has 1 non-finite entries"):
        sparsegpt_prune(W, X.t() @ X)
    W[3, 5] = float("inf")
    with pytest.raises(SparseGPTError, match="non-finite"):
        sparsegpt_prune_group([torch.randn(4, 16), W], X.t() @ X)


def test_nonfinite_hessian_message_counts_entries():
    H = torch.eye(16)
    H[2, 3] = H[3, 2] = float("inf")
    with pytest.raises(SparseGPTError, match=r"Hessian has 2 non-finite entries \(inf/nan\) of 256"):
        sparsegpt_prune(torch.randn(8, 16), H)


@pytest.mark.parametrize("solver", ["loop", "batched"])
def test_huge_finite_hessian_prunes_like_the_unscaled_one(solver):
    torch.manual_seed(1)
    X = torch.randn(64, 16)
    H = X.t() @ X
    W = torch.randn(8, 16)
    big = H * 2.0**120  # finite in float32 (max ~1e38), but its sum and mean overflow
    assert torch.isfinite(big).all() and not torch.isfinite(big.sum())
    ref = sparsegpt_prune(W, H, sparsity=0.5, solver=solver)
    out = sparsegpt_prune(W, big, sparsity=0.5, solver=solver)
    assert torch.equal(out.mask, ref.mask) and torch.equal(out.weight, ref.weight)
    assert out.loss == pytest.approx(ref.loss * 2.0**120, rel=1e-5)
    tiny = sparsegpt_prune(W, H * 2.0**-100, sparsity=0.5, solver=solver)
    assert torch.equal(tiny.mask, ref.mask) and torch.equal(tiny.weight, ref.weight)
    odd = sparsegpt_prune(W, H * 3e36, sparsity=0.5, pattern="2:4", solver="loop")
    expected = sparsegpt_prune(W, H, sparsity=0.5, pattern="2:4", solver="loop")
    assert torch.equal(odd.mask, expected.mask)
    torch.testing.assert_close(odd.weight, expected.weight, rtol=1e-4, atol=1e-5)


def test_factor_of_a_huge_hessian_is_the_unscaled_factor():
    torch.manual_seed(2)
    X = torch.randn(64, 16)
    H = X.t() @ X
    U, _, _ = inverse_hessian_factor(H, 0.01)
    U_big, _, _ = inverse_hessian_factor(H * 2.0**120, 0.01)
    torch.testing.assert_close(U_big * 2.0**60, U)
    with pytest.raises(SparseGPTError, match=r"Hessian entries reach .*beyond what float32 can factor"):
        inverse_hessian_factor(H.double() * 1e300, 0.01)
