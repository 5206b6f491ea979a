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


class _FakeEngine:
    """Engine that 'generates' a fixed number of tokens per prompt and records its calls."""

    def __init__(self, per_prompt: int) -> None:
        self.per_prompt, self.calls = per_prompt, []

    def generate(self, prompts, sampling, progress=None):
        from types import SimpleNamespace

        self.calls.append((len(prompts), len(prompts[0]), sampling.max_new_tokens, sampling.temperature))
        n = min(self.per_prompt, sampling.max_new_tokens)
        return [[SimpleNamespace(completion_ids=list(range(n)))] for _ in prompts]


def test_measure_generation_counts_generated_tokens_after_a_warm_up():
    from rac.eval.throughput import measure_generation

    engine = _FakeEngine(per_prompt=5)
    result = measure_generation(engine, vocab_size=1000, batch_size=4, prompt_len=16, decode_len=8, repeats=3)
    assert engine.calls[0] == (1, 16, 2, 0.0)  # warm-up: one prompt, two tokens, greedy
    assert engine.calls[1:] == [(4, 16, 8, 0.0)] * 3
    assert result["generated_tokens"] == 20 and result["prompt_tokens"] == 64
    assert result["generation_tokens_per_s"] > 0 and result["repeats"] == 3
    with pytest.raises(ValueError, match="decode_len"):
        measure_generation(engine, vocab_size=1000, batch_size=1, prompt_len=4, decode_len=0)


def test_two_four_fp8_kernel_says_what_ran(tiny_llama, monkeypatch):
    from rac.eval import throughput

    model, _ = tiny_llama
    report = kernelize(model, "2:4+fp8")
    assert report["kernel"] == "none" and "CUDA" in report["note"]
    monkeypatch.setitem(__import__("sys").modules, "torchao", None)  # torchao absent (or >= 0.16)
    missing = throughput._torchao_fp8_semi_sparse(model, ("lm_head",))
    assert missing["kernel"] == "none" and "torchao <= 0.15" in missing["note"]
    with pytest.raises(ValueError, match="2:4\\+fp8"):
        kernelize(model, "int4")


def test_metrics_schema_accepts_vllm_and_two_four_fp8_results():
    import json
    from pathlib import Path

    from jsonschema import Draft202012Validator

    import rac

    schema = json.loads((Path(rac.__file__).parent / "schemas" / "metrics.schema.json").read_text())
    validator = Draft202012Validator({"$ref": "#/$defs/throughput_metrics", "$defs": schema["$defs"]})
    generation = {"generation_seconds": 1.0, "generated_tokens": 64, "generation_tokens_per_s": 64.0,
                  "prompt_tokens": 32, "kernel": "none", "repeats": 1}
    vllm = {"type": "throughput", "status": "ok", "backend": "vllm", "device": "cuda", "batch_size": 2,
            "prompt_len": 16, "decode_len": 32, "variants": {"dense": generation,
                                                              "compressed": {**generation, "kernel": "fp8"}},
            "speedup": {"generation": 1.0}}
    assert list(validator.iter_errors(vllm)) == []
    phases = {"prefill_seconds": 1.0, "decode_seconds": 1.0, "prefill_tokens_per_s": 1.0, "decode_tokens_per_s": 1.0}
    torch_result = {**vllm, "backend": "torch", "variants": {"dense": {**phases, "kernel": "none"},
                                                              "compressed": {**phases, "kernel": "2:4+fp8"}},
                    "speedup": {"prefill": 1.0, "decode": 1.0}}
    assert list(validator.iter_errors(torch_result)) == []
    bad = {**torch_result, "variants": {"dense": {**phases, "kernel": "int4"}}}
    assert list(validator.iter_errors(bad))
