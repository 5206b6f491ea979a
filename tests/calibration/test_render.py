"""The single prompt rendering used by rollouts, prompt calibration and evaluation."""

from __future__ import annotations

import copy

import pytest

from rac.calibration.render import RenderError, render_prompt, render_text


def test_chat_template_with_generation_prompt(tokenizer):
    ids = render_prompt(tokenizer, "What is 2+2?", {})
    text = tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\n")  # the template's default system prompt
    assert "<|im_start|>user\nWhat is 2+2?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    assert ids.count(tokenizer.convert_tokens_to_ids("<|im_start|>")) == 3  # no extra BOS added


def test_system_prompt_and_forced_prefix(tokenizer):
    cfg = {"system_prompt": "Think step by step.", "prefix": "<think>\n"}
    text = render_text(tokenizer, "Solve x+1=2.", cfg)
    assert text == ("<|im_start|>system\nThink step by step.<|im_end|>\n<|im_start|>user\nSolve x+1=2.<|im_end|>\n"
                    "<|im_start|>assistant\n<think>\n")
    ids = render_prompt(tokenizer, "Solve x+1=2.", cfg)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids).endswith("assistant\n<think>\n")
    assert "SmolLM" not in tokenizer.decode(ids)


def test_raw_text_rendering(tokenizer):
    ids = render_prompt(tokenizer, "The sky is", {"chat_template": False, "prefix": " blue"})
    assert tokenizer.decode(ids) == "The sky is blue"
    assert render_text(tokenizer, "Q", {"chat_template": False, "system_prompt": "S"}) == "S\n\nQ"


def test_missing_chat_template_is_a_clear_error(tokenizer):
    base = copy.deepcopy(tokenizer)
    base.chat_template = None
    with pytest.raises(RenderError, match="chat_template: false"):
        render_prompt(base, "hi", {"chat_template": True})
    with pytest.raises(RenderError, match="string"):
        render_prompt(tokenizer, 42, {})
