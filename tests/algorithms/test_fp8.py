"""FP8 E4M3 quantization: error bounds, per-channel scales, zeros preserved, Fp8Linear swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rac.algorithms.fp8 import (
    FP8_DTYPE,
    Fp8Error,
    dequantize_fp8,
    fp8_linear_reference,
    fp8_linear_scaled_mm,
    quantize_activation_fp8_per_token,
    quantize_weight_fp8,
    scaled_mm_supported,
)
from rac.models.fp8_linear import Fp8Linear, swap_in_fp8


def test_weight_roundtrip_per_channel():
    torch.manual_seed(0)
    W = torch.randn(32, 64) * torch.logspace(-3, 2, 32)[:, None]  # rows of very different ranges
    W[3] = 0.0
    W[5, ::2] = 0.0
    q, scale = quantize_weight_fp8(W)
    assert q.dtype == FP8_DTYPE and scale.shape == (32, 1) and scale.dtype == torch.float32
    torch.testing.assert_close(scale[:, 0][W.abs().amax(1) > 0], (W.abs().amax(1) / 448)[W.abs().amax(1) > 0])
    deq = dequantize_fp8(q, scale)
    # E4M3 has 3 mantissa bits: half-ulp relative error 2^-4 for normals, 2^-10 * scale for subnormals,
    # whatever the row's range (per-channel scales)
    assert ((deq - W).abs() <= W.abs() * 2**-4 + scale * 2**-10).all()
    assert (deq[W == 0] == 0).all() and (q.float()[W == 0] == 0).all()
    live = W.abs().amax(1) > 0
    torch.testing.assert_close(deq.abs().amax(1)[live], W.abs().amax(1)[live])  # absmax maps to 448 exactly


def test_activation_per_token_and_reference_linear():
    torch.manual_seed(1)
    x = torch.randn(2, 5, 64) * torch.tensor([1e-2, 1e2])[:, None, None]
    _, s = quantize_activation_fp8_per_token(x)
    assert s.shape == (2, 5, 1)
    torch.testing.assert_close(s, x.abs().amax(-1, keepdim=True) / 448)
    W = torch.randn(16, 64)
    b = torch.randn(16)
    qw, sw = quantize_weight_fp8(W)
    y = fp8_linear_reference(x, qw, sw, b)
    exact = x @ W.t() + b
    rel = (y - exact).norm() / exact.norm()
    assert y.shape == exact.shape and 1e-4 < rel < 0.08


def test_scaled_mm_guard_on_cpu():
    qw, sw = quantize_weight_fp8(torch.randn(32, 64))
    x = torch.randn(4, 64)
    assert not scaled_mm_supported(x, qw)
    with pytest.raises(Fp8Error, match="CUDA"):
        fp8_linear_scaled_mm(x, qw, sw)


def test_fp8_linear_swap_keeps_zeros_and_matches_reference():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8, bias=False))
    with torch.no_grad():
        model[0].weight[:, ::2] = 0
    x = torch.randn(3, 32)
    dense = model(x)
    swapped = swap_in_fp8(model, ["0", "2"])
    assert swapped == ["0", "2"] and isinstance(model[0], Fp8Linear)
    assert (model[0].weight.float()[:, ::2] == 0).all()
    y = model(x)
    assert (y - dense).norm() / dense.norm() < 0.1
    state = {"2.weight": model[2].weight.data, "2.weight_scale": model[2].weight_scale.data}
    other = nn.Sequential(nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, 8, bias=False))
    swap_in_fp8(other, ["2"], state)
    assert torch.equal(other[2].dequantized_weight(), model[2].dequantized_weight())
    with pytest.raises(ValueError, match="not an nn.Linear"):
        swap_in_fp8(model, ["1"])
    with pytest.raises(ValueError, match="lack"):
        swap_in_fp8(other, ["0"], state)
