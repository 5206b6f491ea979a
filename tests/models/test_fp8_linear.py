"""Fp8Linear's simulated (CPU) path keeps the dequantized weight between calls: same outputs as the
reference, rebuilt when the weight changes."""

from __future__ import annotations

import torch
from torch import nn

from rac.algorithms.fp8 import fp8_linear_reference, quantize_weight_fp8
from rac.models.fp8_linear import Fp8Linear


def _layer(seed: int) -> Fp8Linear:
    torch.manual_seed(seed)
    return Fp8Linear.from_linear(nn.Linear(24, 12))


def test_cached_weight_gives_the_reference_output_on_every_call() -> None:
    layer, x = _layer(0), torch.randn(3, 5, 24)
    expected = fp8_linear_reference(x, layer.weight, layer.weight_scale, layer.bias)
    for _ in range(3):
        assert torch.equal(layer(x), expected)


def test_cache_is_rebuilt_when_the_weight_changes_in_place_or_is_loaded() -> None:
    layer, x = _layer(1), torch.randn(4, 24)
    before = layer(x)
    other = _layer(2)
    with torch.no_grad():
        layer.weight.copy_(other.weight)  # in place: same storage, new version
    assert torch.equal(layer(x), fp8_linear_reference(x, other.weight, layer.weight_scale, layer.bias))
    layer.load_state_dict(other.state_dict())  # every tensor, scale included
    after = layer(x)
    assert torch.equal(after, other(x)) and not torch.equal(after, before)
    q, scale = quantize_weight_fp8(torch.randn(12, 24))
    layer.weight = nn.Parameter(q, requires_grad=False)  # replaced: new storage
    layer.weight_scale = nn.Parameter(scale, requires_grad=False)
    assert torch.equal(layer(x), fp8_linear_reference(x, q, scale, layer.bias))


def test_layer_built_under_inference_mode_runs() -> None:
    with torch.inference_mode():
        layer, x = _layer(3), torch.randn(2, 24)
        assert torch.equal(layer(x), fp8_linear_reference(x, layer.weight, layer.weight_scale, layer.bias))
