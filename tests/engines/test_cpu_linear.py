"""CPU Linear layouts: exact results, restored on exit, packed vs transposed selection."""

from __future__ import annotations

import pytest
import torch

from rac.engines import cpu_linear
from rac.engines.cpu_linear import (
    fast_linear_weights,
    mkl_packing_available,
    packed_linear_weights,
    transposed_linear_weights,
)


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.skipif(not mkl_packing_available(), reason="torch built without MKL")
def test_packed_layers_give_the_same_outputs_for_packed_and_other_row_counts(tiny_llama):
    model, _ = tiny_llama
    decode = torch.randint(0, 100, (3, 1))  # 3 rows: the packed row count
    prefill = torch.randint(0, 100, (3, 7))  # 21 rows: falls back to the original weight
    expected = [_logits(model, decode), _logits(model, prefill)]
    with packed_linear_weights(model, rows=3) as count:
        assert count == sum(isinstance(m, torch.nn.Linear) for m in model.modules())  # lm_head included
        got = [_logits(model, decode), _logits(model, prefill)]
    for a, b in zip(expected, got):  # float32 either way; MKL's kernels may round the last bit differently
        assert torch.allclose(a, b, rtol=0, atol=1e-5), (a - b).abs().max()
    assert not torch.equal(expected[0], torch.zeros_like(expected[0]))
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_transposed_weights_are_strided_inside_and_contiguous_after(tiny_llama):
    model, _ = tiny_llama
    proj = model.model.layers[0].mlp.up_proj
    before = proj.weight.detach().clone()
    ids = torch.randint(0, 100, (2, 5))
    expected = _logits(model, ids)
    with transposed_linear_weights(model) as count:
        assert count > 0 and proj.weight.stride() == (1, proj.out_features)
        assert model.lm_head.weight.is_contiguous()  # the tied output embedding is left alone
        assert torch.allclose(_logits(model, ids), expected, atol=1e-6)
    assert proj.weight.is_contiguous() and torch.equal(proj.weight, before)


def test_fast_layout_falls_back_to_transposed_over_the_memory_budget(tiny_llama, monkeypatch):
    model, _ = tiny_llama
    with fast_linear_weights(model, rows=2) as layout:
        assert layout == ("mkl-packed" if mkl_packing_available() else "transposed")
    assert cpu_linear.packed_bytes(model) > 0
    monkeypatch.setattr(cpu_linear, "PACKED_BUDGET_BYTES", 0)
    with fast_linear_weights(model, rows=2) as layout:
        assert layout == "transposed"
        assert model.model.layers[0].mlp.up_proj.weight.stride() == (1, model.model.layers[0].mlp.up_proj.out_features)
    assert all(p.is_contiguous() for p in model.parameters())


def _bf16(tiny_llama):
    model, _ = tiny_llama
    return model.to(torch.bfloat16)


def test_bf16_linears_compute_like_a_bf16_gemm_with_float32_accumulation(tiny_llama):
    """Every product of two bfloat16 values is exact in float32: the result is the float64 reference rounded to
    bfloat16 except where float32 summation order tips a rounding (at most one bfloat16 step)."""
    model = _bf16(tiny_llama)
    proj = model.model.layers[0].mlp.up_proj
    x = torch.randn(3, proj.in_features).to(torch.bfloat16)
    reference = (x.double() @ proj.weight.double().T).to(torch.bfloat16)
    native = proj(x)
    layers = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    with cpu_linear.float32_bf16_linears(model, rows=3) as count:
        assert count == layers  # lm_head included
        got = proj(x)
        assert got.dtype == torch.bfloat16
        with pytest.raises(RuntimeError):  # a float32 input fails as it does on the layer itself
            proj(x.float())
    step = reference.float().abs().clamp_min(1e-30) * 2.0**-7  # one bfloat16 step (8-bit mantissa)
    assert ((got.float() - reference.float()).abs() <= step).all()
    assert (got == reference).float().mean() > 0.97
    assert ((native.float() - reference.float()).abs() <= step).all()  # torch's own bfloat16 GEMM: the same bar
    assert "forward" not in proj.__dict__ and proj.weight.dtype == torch.bfloat16  # restored


def test_fast_layout_computes_bf16_in_float32_only_without_native_bf16(tiny_llama, monkeypatch):
    model = _bf16(tiny_llama)
    proj = model.model.layers[0].mlp.up_proj
    monkeypatch.setattr(cpu_linear, "native_bf16_gemm", lambda: False)
    with fast_linear_weights(model, rows=2) as layout:
        assert layout.endswith("+bf16-as-float32") and "forward" in proj.__dict__
    assert "forward" not in proj.__dict__
    monkeypatch.setattr(cpu_linear, "UPCAST_BUDGET_BYTES", 0)  # float32 copies over the budget: as it is
    with fast_linear_weights(model, rows=2) as layout:
        assert "bf16" not in layout and "forward" not in proj.__dict__
    monkeypatch.setattr(cpu_linear, "native_bf16_gemm", lambda: True)
    monkeypatch.setattr(cpu_linear, "UPCAST_BUDGET_BYTES", 2**40)
    with fast_linear_weights(model, rows=2) as layout:
        assert "bf16" not in layout and "forward" not in proj.__dict__


def test_native_bf16_gemm_reads_the_cpu_capability(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert cpu_linear.native_bf16_gemm() is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert cpu_linear.native_bf16_gemm() is True
