"""Sampling config validation, engine registry, EOS discovery."""

from __future__ import annotations

import importlib.util

import pytest

from rac.engines.base import EngineError, SamplingConfig, check_engine_available, eos_token_ids
from rac.engines.factory import get_engine


def test_sampling_config_validates():
    assert SamplingConfig(max_new_tokens=8).to_dict() == {"max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0,
                                                          "top_k": 0, "seed": 0, "n": 1}
    for bad in ({"max_new_tokens": 0}, {"max_new_tokens": 4, "temperature": -1}, {"max_new_tokens": 4, "top_p": 0},
                {"max_new_tokens": 4, "n": 0}, {"max_new_tokens": 4, "top_k": -2}):
        with pytest.raises(EngineError):
            SamplingConfig(**bad)


def test_unknown_engine_suggests_a_name():
    with pytest.raises(ValueError, match="did you mean 'vllm'"):
        get_engine("vlm", {"id": "x"}, "cpu", None, {})


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed here")
def test_missing_vllm_is_reported_before_loading_anything():
    with pytest.raises(EngineError, match="needs the python package 'vllm'"):
        check_engine_available("vllm")


def test_eos_ids_merge_tokenizer_and_generation_config(tiny_llama):
    model, tok = tiny_llama
    model.generation_config.eos_token_id = [tok.eos_token_id, 0]
    assert eos_token_ids(tok, model) == {tok.eos_token_id, 0}
    assert eos_token_ids(tok) == {tok.eos_token_id}
