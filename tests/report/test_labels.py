"""Labels from what a run really did: per-scope patterns, FP8, calibration source, rollout policy, budget."""

from __future__ import annotations

import pytest
from synthetic import (
    C4,
    DENSE,
    FP8,
    MLP24_ALL,
    MLP24_FIRST,
    MLP24_FIRST_LAST,
    OFF_POLICY_14B,
    PAPER_BASE,
    PROMPT,
    merge,
)

from rac.report.labels import budget_label, calibration_label, compression_label, compression_value, flatten


@pytest.mark.parametrize(("overlays", "label"), [
    ((DENSE,), "dense"),
    ((), "50%"),
    (({"prune": {"sparsity": 0.3}},), "30%"),
    ((MLP24_FIRST,), "2:4 MLP first third"),
    ((MLP24_FIRST_LAST,), "2:4 MLP first+last third"),
    ((MLP24_ALL,), "2:4 MLP all blocks"),
    ((MLP24_FIRST_LAST, FP8), "2:4 MLP first+last third + FP8"),
    ((DENSE, FP8), "FP8"),
    (({"prune": {"pattern": "2:4"}},), "2:4"),
    (({"prune": {"method": "wanda", "sparsity": 0.4}},), "40% Wanda"),
    (({"prune": {"scopes": [{"blocks": "[0, 3)"}]}},), "50% blocks [0, 3)"),
    (({"prune": {"scopes": [{"blocks": [0, 1, 5], "modules": ["q_proj", "k_proj"]}]}},), "50% q_proj+k_proj blocks 0,1,5"),
])
def test_compression_label(overlays, label):
    assert compression_label(merge(PAPER_BASE, *overlays)) == label


def test_mixed_scopes_name_each_part():
    recipe = merge(PAPER_BASE, {"prune": {"scopes": [
        {"name": "mlp-24", "modules": ["mlp"], "blocks": "first_third", "pattern": "2:4"},
        {"name": "rest", "modules": ["attn"], "blocks": "all"}]}})
    assert compression_label(recipe) == "2:4 MLP first third + 50% attn all blocks"
    assert compression_value(recipe) == 0.5


def test_calibration_label_from_kind_source_and_policy():
    assert calibration_label(merge(PAPER_BASE, C4)) == "C4"  # hf:allenai/c4:en
    builtin_c4 = {"calibration": {"kind": "text", "sources": [{"dataset": "c4"}]}}
    assert calibration_label(merge(PAPER_BASE, builtin_c4)) == "C4"
    wiki = {"calibration": {"kind": "text", "sources": [{"path": "hf:wikitext:wikitext-2-raw-v1"}]}}
    assert calibration_label(merge(PAPER_BASE, wiki)) == "text (wikitext)"
    assert calibration_label(merge(PAPER_BASE, PROMPT)) == "prompt"
    assert calibration_label(PAPER_BASE) == "RAC"
    assert calibration_label(PAPER_BASE, contrast_policy=True) == "RAC on-policy"
    assert calibration_label(merge(PAPER_BASE, OFF_POLICY_14B)) == "RAC off-policy (DeepSeek-R1-Distill-Qwen-14B)"
    assert calibration_label(PAPER_BASE, show_sources=True) == "RAC [OpenR1-Math-220k]"


def test_budget_label_and_flatten():
    assert [budget_label(v) for v in (32768, 8192, 4096, 256)] == ["32k tokens", "8k tokens", "4k tokens",
                                                                   "256 tokens"]
    flat = flatten({"a": {"b": 1, "c": None, "d": [1, 2]}, "e": {}})
    assert flat == {"a.b": 1, "a.c": None, "a.d": [1, 2], "e": {}}


def test_nm_patterns_go_through_the_one_parser():
    """1:4 keeps one weight in four (75% sparse, not 25%); a malformed pattern is a PatternError."""
    from rac.nm_pattern import PatternError

    one_of_four = merge(PAPER_BASE, {"prune": {"pattern": "1 : 4"}})
    assert compression_label(one_of_four) == "1:4"
    assert compression_value(one_of_four) == 0.75
    with pytest.raises(PatternError):
        compression_label(merge(PAPER_BASE, {"prune": {"pattern": "2/4"}}))
