"""Per-phase throughput on CPU and the kernel bookkeeping."""

from __future__ import annotations

import pytest
import torch

from rac.eval.throughput import is_two_four, kernelize, linear_speedups, measure_phases


def test_measure_phases_reports_both_phases(tiny_llama):
    model, _ = tiny_llama
    result = measure_phases(model, batch_size=2, prompt_len=8, decode_len=3, repeats=1)
    assert result["prefill_tokens_per_s"] > 0 and result["decode_tokens_per_s"] > 0
    assert result["prefill_seconds"] > 0 and result["decode_seconds"] > 0


def test_measure_phases_rejects_bad_shapes(tiny_llama):
    with pytest.raises(ValueError, match="batch_size"):
        measure_phases(tiny_llama[0], batch_size=0, prompt_len=8, decode_len=3)


def test_two_four_detection():
    weight = torch.randn(8, 16)
    assert not is_two_four(weight)
    weight[:, 1::4] = 0
    weight[:, 2::4] = 0
    assert is_two_four(weight)
    assert not is_two_four(torch.zeros(4, 6))


def test_kernelize_on_cpu_says_nothing_changed(tiny_llama):
    model, _ = tiny_llama
    assert kernelize(model, "2:4")["kernel"] == "none"
    assert kernelize(model, "fp8") == {"kernel": "none", "layers": 0,
                                       "note": "FP8 simulated (quantize-dequantize) on CPU"}
    with pytest.raises(ValueError, match="unknown kernel"):
        kernelize(model, "int4")


def test_linear_speedups_needs_cuda():
    with pytest.raises(ValueError, match="CUDA"):
        linear_speedups([(64, 64)], "cpu")
