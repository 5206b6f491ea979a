"""Prompts against the model's context window: counts and warnings, for HF models and vLLM engines."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from rac.eval.context import context_report

log = logging.getLogger("test-context")


def test_counts_prompts_over_the_context_alone_and_with_the_answer(caplog):
    model = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=10))
    prompts = [[1] * 3, [1] * 8, [1] * 10, [1] * 12]
    with caplog.at_level("WARNING"):
        report = context_report(log, "t", model, prompts, new_tokens=4)
    assert report == {"context_length": 10, "prompts_over_context": 2, "prompts_over_context_with_answer": 3}
    assert "2 of 4 prompts are as long as the model's context (10 tokens)" in caplog.text
    assert "1 of 4 prompts leave fewer than 4 tokens of the 10-token context" in caplog.text


def test_vllm_engine_context_and_unknown_context(caplog):
    engine = SimpleNamespace(llm=SimpleNamespace(llm_engine=SimpleNamespace(model_config=SimpleNamespace(max_model_len=5))))
    assert context_report(log, "t", engine, [[1, 2]], new_tokens=2)["prompts_over_context_with_answer"] == 0
    assert context_report(log, "t", engine, [[1] * 5], new_tokens=2)["prompts_over_context"] == 1
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert context_report(log, "t", SimpleNamespace(), [[1] * 100], new_tokens=2) == {}
    assert not caplog.text
