"""Length metrics: loop detection, per-task length block, dense pairing."""

from __future__ import annotations

import pytest

from rac.eval.length import length_metrics, length_ratio, loop_mask, loop_share, sample_fields


def test_loop_share_counts_a_repeated_unit_until_the_end() -> None:
    prefix = list(range(100, 140))  # 40 distinct tokens, no loop
    loop = [1, 2, 3, 4, 5] * 8  # 40 tokens of a 5-token unit
    assert loop_share(prefix) == 0.0
    mask = loop_mask(prefix + loop)
    assert mask[:40] == [False] * 40 and all(mask[40:])
    assert loop_share(prefix + loop) == pytest.approx(0.5)


def test_short_or_rare_repeats_are_not_loops() -> None:
    assert loop_share([7, 7, 7, 1, 2, 3]) == 0.0  # "..." : below min_span
    assert loop_share([1, 2, 3, 4] * 2 + list(range(50, 70))) == 0.0  # only two repeats
    assert loop_share([9] * 20) == 1.0
    with pytest.raises(ValueError, match="min_repeats"):
        loop_mask([1, 2], min_repeats=1)


def test_sample_fields_end_of_reasoning() -> None:
    assert sample_fields([1, 2], "a </think> 3", "</think>") == {"loop_share": 0.0, "reasoning_ended": True}
    assert sample_fields([1, 2], "no marker", "</think>")["reasoning_ended"] is False
    assert sample_fields([1, 2], "anything", None)["reasoning_ended"] is None


def test_length_metrics() -> None:
    records = [
        {"id": "a", "length": 10, "finish_reason": "stop", "loop_share": 0.0, "reasoning_ended": True},
        {"id": "b", "length": 30, "finish_reason": "length", "loop_share": 0.5, "reasoning_ended": False},
        {"id": "c", "length": 20, "finish_reason": "stop", "loop_share": 0.0, "reasoning_ended": True},
        {"id": "d", "length": 30, "finish_reason": "length", "loop_share": 0.3, "reasoning_ended": False},
    ]
    m = length_metrics(records, 30)
    assert m["mean_tokens"] == 22.5 and m["p90_tokens"] == 30.0 and m["budget"] == 30
    assert m["budget_hit_rate"] == 0.5 and m["eos_rate"] == 0.5 and m["reasoning_end_rate"] == 0.5
    assert m["loop_share"] == pytest.approx(0.2) and m["looping_samples"] == 0.5
    no_marker = [{**r, "reasoning_ended": None} for r in records]
    assert length_metrics(no_marker, 30)["reasoning_end_rate"] is None
    assert length_metrics([], None)["mean_tokens"] == 0.0


def test_length_ratio_pairs_by_problem_id() -> None:
    dense = [{"id": "a", "length": 10}, {"id": "b", "length": 30}, {"id": "z", "length": 99}]
    pruned = [{"id": "b", "length": 60}, {"id": "a", "length": 10}, {"id": "a", "length": 20}]
    r = length_ratio(pruned, dense)
    assert r["n_paired"] == 2 and r["unpaired"] == 1
    assert r["mean_tokens"] == pytest.approx(37.5) and r["dense_mean_tokens"] == 20.0
    assert r["ratio"] == pytest.approx(75 / 40)
    assert r["mean_problem_ratio"] == pytest.approx((1.5 + 2.0) / 2)
    with pytest.raises(ValueError, match="share no problem id"):
        length_ratio([{"id": "x", "length": 1}], dense)
