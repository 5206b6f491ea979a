"""Eval prompts against the model's context window: counted for metrics.json and warned about.

A prompt as long as the context cannot be answered at all, and one that leaves fewer than
``max_new_tokens`` free has its answer cut by the context rather than by the budget; both make an
accuracy look worse than the model is, so the evaluate stage reports them next to the accuracy.
"""

from __future__ import annotations

import logging
from typing import Any


def _context_length(engine_or_model: Any) -> int | None:
    """The model's context window (HF ``max_position_embeddings`` or vLLM's ``max_model_len``)."""
    model = getattr(engine_or_model, "model", engine_or_model)
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    if value is None:
        engine = getattr(getattr(engine_or_model, "llm", None), "llm_engine", None)
        value = getattr(getattr(engine, "model_config", None), "max_model_len", None)
    return value if isinstance(value, int) and value > 0 else None


def context_report(log: logging.Logger, task: str, engine_or_model: Any, prompts: list[list[int]],
                   new_tokens: int) -> dict:
    """Count (and warn about) prompts the model's context cannot hold: alone, or with ``new_tokens`` more."""
    limit = _context_length(engine_or_model)
    if limit is None:
        return {}
    over = sum(len(p) >= limit for p in prompts)
    tight = sum(len(p) + new_tokens > limit for p in prompts)
    if over:
        log.warning("evaluate task %s: %d of %d prompts are as long as the model's context (%d tokens) or "
                    "longer: they cannot be answered", task, over, len(prompts), limit)
    if tight > over:
        log.warning("evaluate task %s: %d of %d prompts leave fewer than %d tokens of the %d-token context "
                    "for the answer", task, tight - over, len(prompts), new_tokens, limit)
    return {"context_length": limit, "prompts_over_context": over, "prompts_over_context_with_answer": tight}
