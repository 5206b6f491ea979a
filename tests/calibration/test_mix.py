"""Calibration kinds, budgets, mixes by weight, per-token weights, off-policy re-tokenization."""

from __future__ import annotations

import pytest
import torch

from rac.calibration.datasets import DatasetError
from rac.calibration.mix import KIND_DECODE, KIND_PROMPT, KIND_TEXT, CalibrationSet, build_calibration_set
from rac.calibration.render import render_prompt
from rac.calibration.sources import source_items


def cfg(kind, sources, tokens=None, prompts=None, **extra):
    base = {"kind": kind, "sources": sources, "budget": {"tokens": tokens, "prompts": prompts},
            "text_seq_len": 64, "max_prompt_tokens": 512, "render": {"chat_template": True, "prefix": ""},
            "weights": {"prompt": 1.0, "decode": 1.0}, "seed": 0}
    return {**base, **extra}


def test_text_documents_are_packed_into_full_sequences(tokenizer):
    calib = build_calibration_set(cfg("text", [{"dataset": "c4"}], tokens=64 * 5 + 10), tokenizer)
    assert len(calib) == 5 and calib.lengths() == [64] * 5
    assert calib.stats["text_tokens"] == 320 and calib.stats["prompt_tokens"] == calib.stats["decode_tokens"] == 0
    assert bool((calib.token_kind == KIND_TEXT).all()) and bool((calib.token_weight == 1.0).all())
    stream: list[int] = []
    for item in source_items({"dataset": "c4"}, 0, 0)[:20]:
        stream += tokenizer(item.text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert calib.input_ids.tolist() == stream[:320]  # documents in seeded order, EOS between them


def test_prompt_kind_uses_whole_rendered_prompts_within_budget(tokenizer):
    calib = build_calibration_set(cfg("prompt", [{"dataset": "gsm8k_train"}], tokens=1000), tokenizer)
    items = source_items({"dataset": "gsm8k_train"}, 0, 0)
    for i in range(len(calib)):
        assert calib.sequence(i)[0].tolist() == render_prompt(tokenizer, items[i].text, {})
    assert calib.stats["prompt_tokens"] <= 1000 and calib.stats["total_tokens"] == calib.stats["prompt_tokens"]
    next_len = len(render_prompt(tokenizer, items[len(calib)].text, {}))
    assert calib.stats["prompt_tokens"] + next_len > 1000  # stopped only because the next one did not fit
    assert bool((calib.token_kind == KIND_PROMPT).all())
    by_count = build_calibration_set(cfg("prompt", [{"dataset": "gsm8k_train"}], prompts=7), tokenizer)
    assert len(by_count) == by_count.stats["prompts"] == 7


def test_mix_by_weight_splits_the_token_budget(tokenizer):
    sources = [{"dataset": "gsm8k_train", "weight": 3.0}, {"dataset": "math_train", "weight": 1.0}]
    calib = build_calibration_set(cfg("prompt", sources, tokens=4000), tokenizer)
    gsm, math = calib.stats["sources"]
    assert (gsm["share"]["tokens"], math["share"]["tokens"]) == (3000, 1000)
    assert 3000 - 150 < gsm["tokens"] <= 3000 and 1000 - 400 < math["tokens"] <= 1000
    assert calib.stats["prompts"] == gsm["prompts"] + math["prompts"] == len(calib)


def test_both_limits_apply_and_zero_weight_sources_add_nothing(tokenizer):
    sources = [{"dataset": "gsm8k_train", "weight": 1.0}, {"dataset": "c4", "weight": 0.0}]
    by_prompts = build_calibration_set(cfg("prompt", sources, tokens=100_000, prompts=5), tokenizer)
    assert len(by_prompts) == 5 and by_prompts.stats["sources"][1]["prompts"] == 0
    by_tokens = build_calibration_set(cfg("prompt", sources, tokens=300, prompts=50), tokenizer)
    assert 0 < len(by_tokens) < 50 and by_tokens.stats["total_tokens"] <= 300
    text = build_calibration_set(cfg("text", [{"dataset": "c4"}], tokens=64 * 10, prompts=3), tokenizer)
    assert len(text) == 3


def test_long_prompts_are_skipped_not_cut(tokenizer):
    calib = build_calibration_set(cfg("prompt", [{"dataset": "math_train"}], prompts=20, max_prompt_tokens=80),
                                  tokenizer)
    assert max(calib.lengths()) <= 80 and calib.stats["skipped_long_prompts"] > 0 and len(calib) == 20


def test_rac_traces_are_prompt_plus_exact_completion_ids(tokenizer, artifact_factory):
    eos = tokenizer.eos_token_id
    completions = [[10, 11, 12, eos], [20, 21], [30, 31, 32, 33, 34, eos]]
    path = artifact_factory(["p one", "p two", "p three"], completions, dropped=[None, "truncated", None])
    config = cfg("rac", [{"dataset": "gsm8k_train"}], tokens=10_000, weights={"prompt": 0.5, "decode": 2.0})
    calib = build_calibration_set(config, tokenizer, rollout_dir=path)
    assert len(calib) == 2 and calib.stats["dropped_truncated"] == 1 and calib.stats["rollouts_used"] == 2
    for seq, (problem, completion) in enumerate([("p one", completions[0]), ("p three", completions[2])]):
        ids, weight, kind = calib.sequence(seq)
        prompt = render_prompt(tokenizer, problem, {})
        assert ids.tolist() == prompt + completion
        assert kind.tolist() == [KIND_PROMPT] * len(prompt) + [KIND_DECODE] * len(completion)
        assert weight.tolist() == [0.5] * len(prompt) + [2.0] * len(completion)
    assert calib.stats["decode_tokens"] == 4 + 6


def test_rac_token_budget_drops_the_overflowing_trace_whole(tokenizer, artifact_factory):
    problems = [f"problem {i}" for i in range(4)]
    path = artifact_factory(problems, [[5] * 20 for _ in problems])
    trace = len(render_prompt(tokenizer, problems[0], {})) + 20
    calib = build_calibration_set(cfg("rac", [{"dataset": "gsm8k_train"}], tokens=2 * trace + trace // 2),
                                  tokenizer, rollout_dir=path)
    assert len(calib) == 2 and calib.stats["dropped_budget"] == 1
    assert calib.lengths() == [trace, trace]  # never cut into windows


def test_off_policy_traces_are_retokenized_for_the_target(tokenizer, artifact_factory):
    text_ids = tokenizer("We add 2 and 2 to get 4.", add_special_tokens=False)["input_ids"]
    path = artifact_factory(["What is 2+2?"], [text_ids + [tokenizer.eos_token_id]], on_policy=False,
                            prompt_ids=[[7, 7, 7]])  # the source model's own (foreign) prompt ids
    config = cfg("rac", [{"dataset": "gsm8k_train"}], tokens=10_000, render={"prefix": "<think>\n"})
    calib = build_calibration_set(config, tokenizer, rollout_dir=path)
    prompt = render_prompt(tokenizer, "What is 2+2?", {"prefix": "<think>\n"})
    assert calib.sequence(0)[0].tolist() == prompt + text_ids + [tokenizer.eos_token_id]
    assert calib.stats["on_policy"] is False


def test_on_policy_rollouts_from_another_rendering_are_refused(tokenizer, artifact_factory):
    path = artifact_factory(["What is 2+2?"], [[5, 6]], prompt_ids=[[7, 7, 7]])
    with pytest.raises(DatasetError, match="off-policy"):
        build_calibration_set(cfg("rac", [{"dataset": "gsm8k_train"}], tokens=100), tokenizer, rollout_dir=path)
    with pytest.raises(DatasetError, match="rollout artifact"):
        build_calibration_set(cfg("rac", [{"dataset": "gsm8k_train"}], tokens=100), tokenizer)


def test_save_load_roundtrip_and_validation(tmp_path, tokenizer):
    calib = build_calibration_set(cfg("prompt", [{"dataset": "gsm8k_test"}], prompts=3), tokenizer)
    calib.save(tmp_path / "calib")
    back = CalibrationSet.load(tmp_path / "calib")
    for name in ("input_ids", "offsets", "token_weight", "token_kind"):
        assert torch.equal(getattr(back, name), getattr(calib, name))
    assert back.input_ids.dtype == torch.int32 and back.token_kind.dtype == torch.int8
    assert back.stats == calib.stats
    with pytest.raises(DatasetError, match="calibration.kind"):
        build_calibration_set(cfg("bogus", [{"dataset": "c4"}], tokens=10), tokenizer)
    with pytest.raises(DatasetError, match="weights"):
        build_calibration_set(cfg("prompt", [{"dataset": "c4"}], tokens=10, weights={"prompt": 0, "decode": 0}),
                              tokenizer)
