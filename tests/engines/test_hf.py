"""HF generate engine: ordering, determinism with a seed, n samples, finish reasons."""

from __future__ import annotations

import pytest
import torch

from rac.engines.base import EngineError, SamplingConfig, get_engine
from rac.engines.hf import HFEngine


@pytest.fixture()
def prompts(tokenizer):
    return [tokenizer(t)["input_ids"] for t in ("a b c d e f g", "hello", "one two three")]


def test_same_seed_same_tokens_other_seed_other_tokens(tiny_model, prompts):
    engine = HFEngine(*tiny_model, batch_size=2)
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=3, n=2)
    torch.manual_seed(123)
    first = engine.generate(prompts, sampling)
    state = torch.random.get_rng_state()
    second = engine.generate(prompts, sampling)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    other = engine.generate(prompts, SamplingConfig(max_new_tokens=6, temperature=1.0, seed=4, n=2))
    ids = lambda res: [[g.completion_ids for g in row] for row in res]
    assert ids(first) == ids(second) != ids(other)
    assert [len(row) for row in first] == [2, 2, 2]
    assert ids(first)[0][0] != ids(first)[0][1]  # the n samples of a prompt differ
    for prompt, row in zip(prompts, first):  # results come back in prompt order despite length sorting
        assert all(g.prompt_ids == prompt for g in row)
    assert engine.last_stats["tokens"] == 36 and engine.last_stats["tokens_per_s"] > 0


def test_greedy_batched_equals_one_at_a_time(tiny_llama, prompts):
    engine = HFEngine(*tiny_llama, batch_size=3)
    greedy = SamplingConfig(max_new_tokens=5, temperature=0.0)
    batched = engine.generate(prompts, greedy)
    single = [engine.generate([p], greedy)[0] for p in prompts]
    assert [r[0].completion_ids for r in batched] == [r[0].completion_ids for r in single]


def test_finish_reasons_length_and_stop(tiny_llama, prompts):
    model, tok = tiny_llama
    engine = HFEngine(model, tok, batch_size=4)
    gens = engine.generate(prompts, SamplingConfig(max_new_tokens=4, temperature=0.0))
    first = gens[0][0]
    assert first.finish_reason == "length" and len(first.completion_ids) == 4
    assert first.text == tok.decode(first.completion_ids, skip_special_tokens=True)
    # make the first greedy token of every prompt an end-of-sequence token
    stopper = {row[0].completion_ids[0] for row in gens}
    model.generation_config.eos_token_id = [tok.eos_token_id, *stopper]
    engine = HFEngine(model, tok, batch_size=4)
    for row in engine.generate(prompts, SamplingConfig(max_new_tokens=4, temperature=0.0)):
        assert row[0].finish_reason == "stop" and len(row[0].completion_ids) == 1


def test_engine_from_a_saved_model_folder(tiny_model_dir, prompts):
    engine = get_engine("hf", {"id": str(tiny_model_dir), "dtype": "float32"}, "cpu", None, {"batch_size": 2})
    assert isinstance(engine, HFEngine) and engine.batch_size == 2
    assert "transformers" in engine.version()
    assert len(engine.generate(prompts[:1], SamplingConfig(max_new_tokens=2))[0]) == 1
    with pytest.raises(EngineError, match="empty prompt"):
        engine.generate([[]], SamplingConfig(max_new_tokens=2))
