"""ALPS against exact references on small matrices and against SparseGPT on the same Hessians."""

from __future__ import annotations

import itertools

import pytest
import torch

from rac.algorithms.alps import ALPSError, _pcg, alps_prune
from rac.algorithms.masks import check_nm
from rac.algorithms.sparsegpt import sparsegpt_prune


def _problem(rows: int, cols: int, tokens: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(tokens, cols, generator=g)
    X[:, :2] *= 6  # a couple of outlier channels, as in LLM activations
    return torch.randn(rows, cols, generator=g), X.T @ X


def _loss(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    delta = (W_hat - W).double()
    return float(((delta @ H.double()) * delta).sum())


def _rel(W: torch.Tensor, W_hat: torch.Tensor, H: torch.Tensor) -> float:
    return _loss(W, W_hat, H) / _loss(W, torch.zeros_like(W), H)


def _best_on_support(w0: torch.Tensor, H: torch.Tensor, support: list[int]) -> torch.Tensor:
    """Exact minimiser of (w - w0) H (w - w0)^T with w zero outside ``support``."""
    Hd = H.double()
    w = torch.zeros_like(w0, dtype=torch.float64)
    w[support] = torch.linalg.solve(Hd[support][:, support], (w0.double() @ Hd)[support])
    return w


def test_pcg_reaches_the_exact_solution_on_a_fixed_support():
    W, H = _problem(4, 12, 200)
    keep = torch.rand(4, 12, generator=torch.Generator().manual_seed(1)) > 0.5
    x = _pcg(torch.zeros_like(W), keep, H, W @ H, iters=200, tol=1e-14)
    for r in range(4):
        support = keep[r].nonzero().flatten().tolist()
        exact = _best_on_support(W[r], H, support)
        assert torch.allclose(x[r].double(), exact, rtol=1e-3, atol=1e-4)
    assert bool((x[~keep] == 0).all())


def test_alps_finds_near_optimal_supports_by_brute_force():
    """Every 4-of-8 support of each row, solved exactly: ALPS is within 2% of the best."""
    W, H = _problem(3, 8, 64, seed=1)
    H = H + 1e-3 * torch.eye(8)
    best = 0.0
    for r in range(3):
        best += min(
            _loss(W[r : r + 1], _best_on_support(W[r], H, list(s)).float()[None], H)
            for s in itertools.combinations(range(8), 4)
        )
    result = alps_prune(W, H, sparsity=0.5, per_row=True, dampening=0.0)
    assert ((result.weight == 0).sum(1) == 4).all()
    assert _loss(W, result.weight, H) <= best * 1.02
    assert result.loss == pytest.approx(0.5 * _loss(W, result.weight, H), rel=1e-4)


@pytest.mark.parametrize("sparsity", [0.5, 0.7])
def test_alps_error_at_most_sparsegpt(sparsity):
    W, H = _problem(48, 96, 400)
    alps = alps_prune(W, H, sparsity=sparsity)
    gpt = sparsegpt_prune(W, H, sparsity=sparsity)
    assert int((alps.weight == 0).sum()) == round(W.numel() * sparsity)
    assert torch.equal(alps.mask, alps.weight == 0)
    assert _rel(W, alps.weight, H) < _rel(W, gpt.weight, H)


def test_alps_two_four_pattern():
    W, H = _problem(32, 64, 300)
    alps = alps_prune(W, H, pattern="2:4")
    gpt = sparsegpt_prune(W, H, pattern="2:4")
    assert check_nm(alps.weight, 2, 4)
    assert int((alps.weight == 0).sum()) == W.numel() // 2
    assert _rel(W, alps.weight, H) < _rel(W, gpt.weight, H)


def test_alps_per_row_and_dead_inputs():
    W, H = _problem(8, 16, 100)
    H[3, :] = 0
    H[:, 3] = 0  # an input that never fires: its weights cost nothing to prune
    result = alps_prune(W, H, sparsity=0.25, per_row=True)
    assert ((result.weight == 0).sum(1) == 4).all()
    assert bool((result.weight[:, 3] == 0).all())


def test_alps_keeps_dtype_and_dense_at_zero_sparsity():
    W, H = _problem(8, 16, 100)
    same = alps_prune(W, H, sparsity=0.0)
    assert torch.equal(same.weight, W) and not bool(same.mask.any())
    half = alps_prune(W.to(torch.bfloat16), H, sparsity=0.5)
    assert half.weight.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "change, message",
    [("nan_h", "non-finite"), ("nan_w", "weight has non-finite"), ("shape", "need W"), ("sparsity", "sparsity")],
)
def test_alps_rejects_bad_input(change, message):
    W, H = _problem(4, 8, 50)
    kwargs = {"sparsity": 0.5}
    if change == "nan_h":
        H[0, 0] = float("nan")
    elif change == "nan_w":
        W[1, 1] = float("inf")
    elif change == "shape":
        H = H[:4, :4]
    else:
        kwargs["sparsity"] = 1.0
    with pytest.raises(ALPSError, match=message):
        alps_prune(W, H, **kwargs)


def test_alps_pattern_must_divide_inputs():
    W, H = _problem(4, 10, 50)
    with pytest.raises(ALPSError, match="divisible"):
        alps_prune(W, H, pattern="2:4")
