"""Source items in seeded order and budget shares by weight."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rac.calibration.datasets import DatasetError
from rac.calibration.sources import (
    Share,
    budget_of,
    source_items,
    source_shares,
    source_weights,
    split_budget,
)


def test_items_follow_a_fixed_seeded_order():
    src = {"dataset": "gsm8k_test"}
    a, b, c = source_items(src, 0, seed=0), source_items(src, 0, seed=0), source_items(src, 0, seed=1)
    assert [i.record for i in a] == [i.record for i in b]
    assert [i.record for i in a] != [i.record for i in c]
    assert sorted(i.record for i in a) == list(range(1319))
    first = a[0]
    assert first.answer is not None and "####" not in first.answer and first.text


@given(total=st.integers(0, 10**6), weights=st.lists(st.floats(0.01, 100), min_size=1, max_size=5))
def test_split_budget_is_exact_and_proportional(total, weights):
    norm = [w / sum(weights) for w in weights]
    shares = split_budget(total, norm)
    assert sum(shares) == total
    assert all(abs(s - total * w) < 1 for s, w in zip(shares, norm))


def test_weights_and_budget_validation():
    assert source_weights([{"weight": 3.0}, {"weight": 1.0}, {"weight": 0.0}]) == [0.75, 0.25, 0.0]
    with pytest.raises(DatasetError, match="weight"):
        source_weights([{"weight": 0.0}])
    with pytest.raises(DatasetError, match="empty"):
        source_weights([])
    assert budget_of({"budget": {"tokens": 100, "prompts": None}}) == (100, None)
    assert budget_of({"budget": {"tokens": 100, "prompts": 5}}) == (100, 5)
    with pytest.raises(DatasetError, match="positive integer"):
        budget_of({"budget": {"tokens": -3}})
    with pytest.raises(DatasetError, match="set `tokens` or `prompts`"):
        budget_of({"budget": {}})


def test_shares_split_every_limit_by_weight():
    cfg = {"budget": {"tokens": 1000, "prompts": 10}, "sources": [{"weight": 3}, {"weight": 1}, {"weight": 0}]}
    assert source_shares(cfg) == [Share(750, 8), Share(250, 2), Share(0, 0)]
    assert source_shares(cfg)[2].empty and not source_shares(cfg)[0].empty
    cfg["budget"] = {"tokens": None, "prompts": 4}
    assert source_shares(cfg)[0] == Share(None, 3)


def test_template_builds_the_prompt_from_several_fields():
    from rac.calibration.sources import render_template

    record = {"title": "T", "body": "Story.", "note": None, "examples": [{"input": "1", "output": "2"}]}
    text = render_template("{title}\n\n{body}\n\nExamples\n{examples}\n\nNote\n{note}", record, "src record 0")
    assert text == "T\n\nStory.\n\nExamples\nInput\n1\nOutput\n2"
    with pytest.raises(DatasetError, match="src record 0: template field\\(s\\) statement not in the record; fields: body"):
        render_template("{statement}", record, "src record 0")
