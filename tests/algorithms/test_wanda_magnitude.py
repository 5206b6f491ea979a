"""Wanda and magnitude pruning: scores, exact counts, N:M."""

from __future__ import annotations

import pytest
import torch

from rac.algorithms.magnitude import magnitude_prune
from rac.algorithms.masks import check_nm
from rac.algorithms.wanda import wanda_prune


def test_wanda_uses_activation_norm_per_row():
    W = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]])
    act = torch.tensor([100.0, 1.0, 1.0, 0.01])  # input 0 is loud, input 3 nearly silent
    out = wanda_prune(W, act, sparsity=0.5)
    # scores row0: 10, 2, 3, 0.4 -> prune cols 3, 1; row1: 40, 3, 2, 0.1 -> prune cols 3, 2
    assert out.mask.tolist() == [[False, True, False, True], [False, False, True, True]]
    assert torch.equal(out.weight == 0, out.mask)
    with pytest.raises(ValueError, match="act_sq_norm"):
        wanda_prune(W, torch.ones(3))


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_patterns(pattern):
    W = torch.randn(8, 32)
    for out in (wanda_prune(W, torch.rand(32), pattern=pattern), magnitude_prune(W, pattern=pattern)):
        n, m = map(int, pattern.split(":"))
        assert check_nm(out.weight, n, m) and int(out.mask.sum()) == 8 * 32 * (m - n) // m


def test_magnitude_per_row_and_global():
    W = torch.randn(6, 20)
    W[0] *= 100  # a loud row: global pruning spares it, per-row does not
    glob = magnitude_prune(W, sparsity=0.4)
    row = magnitude_prune(W, sparsity=0.4, per_row=True)
    assert int(glob.mask.sum()) == 48 and int(row.mask.sum()) == 48
    assert (row.mask.sum(1) == 8).all()
    assert int(glob.mask[0].sum()) == 0
    assert glob.weight[~glob.mask].abs().min() >= W[glob.mask].abs().max()
