"""Masks (exact counts, N:M) and weighted Hessian accumulation."""

from __future__ import annotations

import pytest
import torch

from rac.algorithms.hessian import HessianAccumulator, HessianError, accumulate_hessian, add_gram_
from rac.algorithms.masks import (
    PatternError,
    check_nm,
    nm_mask,
    parse_pattern,
    sparsity_of,
    unstructured_mask,
)


def test_parse_pattern():
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(" 4:8") == (4, 8)
    assert parse_pattern(None) is None
    for bad in ("4:2", "2-4", "a:b", "0:4", 24):
        with pytest.raises(PatternError):
            parse_pattern(bad)


def test_nm_mask_keeps_largest_n_per_group():
    scores = torch.tensor([[4.0, 1.0, 3.0, 2.0, 0.1, 0.2, 0.3, 0.4]])
    mask = nm_mask(scores, 2, 4)
    assert mask.tolist() == [[False, True, False, True, True, True, False, False]]
    w = torch.randn(16, 64)
    pruned = w.masked_fill(nm_mask(w.abs(), 4, 8), 0)
    assert check_nm(pruned, 4, 8) and not check_nm(w, 4, 8)
    assert sparsity_of(pruned) == 0.5
    with pytest.raises(PatternError):
        nm_mask(torch.randn(2, 6), 2, 4)


@pytest.mark.parametrize("per_row", [True, False])
def test_unstructured_exact_count(per_row):
    scores = torch.rand(7, 33)
    mask = unstructured_mask(scores, 0.3, per_row=per_row)
    if per_row:
        assert (mask.sum(1) == round(33 * 0.3)).all()
        # the pruned are the smallest of each row
        assert (scores[mask].reshape(7, -1).amax(1) <= scores.masked_fill(mask, 2).amin(1)).all()
    else:
        assert int(mask.sum()) == round(7 * 33 * 0.3)
        assert scores[mask].max() <= scores[~mask].min()


def test_weighted_hessian_equals_explicit_sum():
    torch.manual_seed(0)
    x = torch.randn(3, 5, 6)
    w = torch.rand(3, 5)
    w[0, 4] = 0.0  # a pad
    expected = sum(w[b, t] * torch.outer(x[b, t], x[b, t]) for b in range(3) for t in range(5))
    H = accumulate_hessian(None, x, w)
    assert H.dtype == torch.float32
    torch.testing.assert_close(H, expected, rtol=1e-5, atol=1e-5)
    # accumulation in two halves, and the accumulator's normalization by total weight
    acc = HessianAccumulator()
    acc.add(x[:2], w[:2])
    acc.add(x[2:], w[2:])
    torch.testing.assert_close(acc.finalize(), expected / w.sum(), rtol=1e-5, atol=1e-6)
    # pads change nothing
    x2 = x.clone()
    x2[0, 4] = 1e3
    torch.testing.assert_close(accumulate_hessian(None, x2, w), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tile", [1, 3, 4, 7, 10, 64])
def test_symmetric_tiled_gram_matches_full_product(tile):
    torch.manual_seed(1)
    flat = torch.randn(50, 10, dtype=torch.float64)
    w = torch.rand(50, 1, dtype=torch.float64)
    start = torch.randn(10, 10, dtype=torch.float64)
    start = start + start.t()  # an earlier batch's sum: added to, not overwritten
    H = add_gram_(start.clone(), w * flat, flat, tile=tile, min_rows=0)
    torch.testing.assert_close(H, start + (w * flat).t() @ flat, rtol=1e-12, atol=1e-12)
    tiles = min(10 // tile, 4)
    if tiles > 1:  # the first row of tiles and its mirror: one product, added to both places
        e = round(10 / tiles)
        assert torch.equal(H[:e, e:], H[e:, :e].t())


def test_cpu_hessian_uses_tiles_on_wide_inputs():
    torch.manual_seed(2)
    x = torch.randn(4, 300, 900)  # 1,200 rows of 900 columns -> 2 tiles of 450 (GRAM_TILE 384)
    H = accumulate_hessian(None, x)
    flat = x.reshape(-1, 900).double()
    torch.testing.assert_close(H.double(), flat.t() @ flat, rtol=1e-5, atol=1e-3)
    assert torch.equal(H[:450, 450:], H[450:, :450].t())  # computed once, mirrored
    few = accumulate_hessian(None, x[:1, :100])  # 100 rows: one GEMM, the same sum
    torch.testing.assert_close(few.double(), (lambda f: f.t() @ f)(x[0, :100].double()), rtol=1e-5, atol=1e-3)


def test_hessian_errors():
    with pytest.raises(HessianError, match="token weights shape"):
        accumulate_hessian(None, torch.randn(2, 3, 4), torch.ones(3, 2))
    with pytest.raises(HessianError, match="float32"):
        accumulate_hessian(torch.zeros(3, 3), torch.randn(2, 4))
    acc = HessianAccumulator(4)
    acc.add(torch.randn(3, 4), torch.zeros(3))
    with pytest.raises(HessianError, match="positive weight"):
        acc.finalize()
