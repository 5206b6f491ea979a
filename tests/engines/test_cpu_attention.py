"""Decode attention cropped to the written part of a static KV cache: same result, restored on exit."""

from __future__ import annotations

import pytest
import torch

from rac.engines import cpu_attention
from rac.engines.base import SamplingConfig
from rac.engines.cpu_attention import IMPLEMENTATION, cropped_static_attention, live_columns
from rac.engines.hf import HFEngine


def test_live_columns_is_one_past_the_last_column_any_row_attends_to():
    mask = torch.zeros(2, 1, 1, 6, dtype=torch.bool)
    mask[0, ..., 1:4] = True
    mask[1, ..., 0:5] = True
    assert live_columns(mask) == 5
    assert live_columns(torch.zeros(3, 1, 1, 4, dtype=torch.bool)) == 0
    assert live_columns(torch.ones(1, 1, 2, 7, dtype=torch.bool)) == 7


def test_cropped_attention_equals_full_attention_and_reads_only_live_slots(tiny_llama, monkeypatch):
    from transformers.integrations import sdpa_attention

    model, _ = tiny_llama
    attn = model.model.layers[0].self_attn  # 4 query heads over 2 KV heads, head dim 16
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 1, 16), torch.randn(2, 2, 10, 16), torch.randn(2, 2, 10, 16)
    mask = torch.zeros(2, 1, 1, 10, dtype=torch.bool)
    mask[0, ..., 2:7] = True  # left-padded row
    mask[1, ..., 0:7] = True  # slots 7-9 not written yet
    k[:, :, 7:] = 1e4  # garbage in dead slots must not matter
    expected, _ = sdpa_attention.sdpa_attention_forward(attn, q, k, v, mask, scaling=0.25)
    widths: list[int] = []
    real = sdpa_attention.sdpa_attention_forward

    def spy(module, query, key, value, attention_mask, **kwargs):
        widths.append(key.shape[2])
        return real(module, query, key, value, attention_mask, **kwargs)

    monkeypatch.setattr(sdpa_attention, "sdpa_attention_forward", spy)
    got, _ = cpu_attention._CroppedSdpa()(attn, q, k, v, mask, scaling=0.25)
    assert widths == [7]
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    # prefill (several queries) and float masks pass through uncropped
    cpu_attention._CroppedSdpa()(attn, torch.randn(2, 4, 3, 16), k, v, mask.expand(2, 1, 3, 10))
    cpu_attention._CroppedSdpa()(attn, q, k, v, torch.zeros(2, 1, 1, 10))
    assert widths == [7, 10, 10]


def test_switches_only_sdpa_models_and_restores_after_an_error(tiny_llama):
    model, _ = tiny_llama
    assert model.config._attn_implementation == "sdpa"
    with pytest.raises(RuntimeError, match="boom"):
        with cropped_static_attention(model) as switched:
            assert switched and model.config._attn_implementation == IMPLEMENTATION
            raise RuntimeError("boom")
    assert model.config._attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    with cropped_static_attention(model) as switched:
        assert not switched and model.config._attn_implementation == "eager"
    assert model.config._attn_implementation == "eager"


def test_engine_decode_steps_read_fewer_slots_and_keep_the_tokens(tiny_llama, monkeypatch):
    model, tok = tiny_llama
    prompts = [tok("one two three four five six")["input_ids"], tok("hi")["input_ids"]]
    greedy = SamplingConfig(max_new_tokens=6, temperature=0.0)
    plain = HFEngine(model, tok, batch_size=2, fast_cpu=False).generate(prompts, greedy)
    seen: list[tuple[int, int]] = []
    real = cpu_attention.live_columns

    def spy(mask: torch.Tensor) -> int:
        seen.append((real(mask), mask.shape[-1]))
        return seen[-1][0]

    monkeypatch.setattr(cpu_attention, "live_columns", spy)
    fast = HFEngine(model, tok, batch_size=2, fast_cpu=True).generate(prompts, greedy)
    assert [r[0].completion_ids for r in fast] == [r[0].completion_ids for r in plain]
    assert len(seen) == 5  # once per decode step, not per layer
    width = len(prompts[0])
    assert [live for live, _ in seen] == [width + step for step in range(1, 6)]
    # the static cache holds every position up front (the last token is never fed back)
    assert {total for _, total in seen} == {width + 5}
    assert model.config._attn_implementation == "sdpa"
