"""Data-parallel generation on a local Ray cluster: two hf replicas give what one replica gives."""

from __future__ import annotations

import pytest

from rac.engines.base import SamplingConfig
from rac.engines.factory import get_engine

pytestmark = pytest.mark.slow


def _prompts(tokenizer) -> list[list[int]]:
    texts = ["2 + 3 =", "The capital of France is", "Once upon a time", "x", "Let us think step by step."]
    return [tokenizer(t)["input_ids"] for t in texts]


def _tokens(results) -> list[list[list[int]]]:
    return [[g.completion_ids for g in row] for row in results]


def test_two_replicas_equal_one(ray_cluster, tiny_model_dir, tokenizer):
    """Two Ray replicas give token for token what one replica gives: greedy and seeded sampling."""
    from dataclasses import replace

    from rac.engines.data_parallel import DataParallelEngine, derived_seed

    spec = {"id": str(tiny_model_dir)}
    prompts = _prompts(tokenizer)
    greedy = SamplingConfig(max_new_tokens=6, temperature=0.0)
    sampled = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=11, n=2)
    engine = get_engine("hf", spec, "cpu", None, {"batch_size": 2, "data_parallel_size": 2})
    assert isinstance(engine, DataParallelEngine) and engine.started_ray is False  # the running cluster
    try:
        got = (_tokens(engine.generate(prompts, greedy)), _tokens(engine.generate(prompts, sampled)))
        assert len(engine.actors) == 2 and engine.last_stats["replicas"] == 2
    finally:
        engine.close()

    # one replica: the same engine in this process, over the same chunks with the same derived seeds
    one = get_engine("hf", spec, "cpu", None, {"batch_size": 2})
    chunks = [prompts[k:k + 2] for k in range(0, len(prompts), 2)]
    expected = tuple(
        [row for k, chunk in enumerate(chunks)
         for row in _tokens(one.generate(chunk, replace(sampling, seed=derived_seed(sampling.seed, k))))]
        for sampling in (greedy, sampled))
    assert got == expected
    assert engine.eos_ids == one.eos_ids and engine.tokenizer.pad_token_id == one.pad_id  # same stop/pad rules
    assert all(len(row) == 1 and len(row[0]) == 6 for row in got[0])  # random model: never stops early
    assert all(len(row) == 2 for row in got[1]) and got[0] != got[1]  # n=2, and it did sample
    assert _tokens(one.generate(prompts, greedy)) == got[0]  # greedy: also equal to one unchunked call


def test_seed_depends_on_request_only():
    from rac.engines.data_parallel import derived_seed

    assert derived_seed(3, 5) == derived_seed(3, 5) != derived_seed(3, 6)
    assert derived_seed(3, 5) != derived_seed(4, 5)
