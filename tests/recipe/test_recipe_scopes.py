"""Block selection, module expansion and scope assignment (pure Python)."""

from __future__ import annotations

import pytest

from rac.nm_pattern import PatternError
from rac.recipe import (
    ScopeError,
    ScopeOverlapError,
    assign_scopes,
    expand_modules,
    parse_pattern,
    select_blocks,
)


def test_thirds_of_28():
    assert select_blocks("first_third", 28) == list(range(9))
    assert select_blocks("middle_third", 28) == list(range(9, 19))
    assert select_blocks("last_third", 28) == list(range(19, 28))
    assert select_blocks("all", 28) == list(range(28))


@pytest.mark.parametrize("n", range(1, 65))
def test_thirds_partition_every_depth(n):
    parts = [select_blocks(s, n) for s in ("first_third", "middle_third", "last_third")]
    assert sorted(b for part in parts for b in part) == list(range(n))
    assert len(parts[0]) == len(parts[2]) == n // 3


def test_ranges_lists_fractions():
    assert select_blocks("[0, 9)", 28) == list(range(9))
    assert select_blocks("[3,5)", 28) == [3, 4]
    assert select_blocks([5, 1, 1], 28) == [1, 5]
    assert select_blocks({"from": 0.0, "to": 0.5}, 28) == list(range(14))
    assert select_blocks({"from": 0.5, "to": 1.0}, 28) == list(range(14, 28))
    assert select_blocks({"from": 0.0, "to": 0.33}, 28) == list(range(10))  # ceil(9.24)
    assert select_blocks({"from": 0.33, "to": 0.66}, 28) == list(range(10, 19))
    assert select_blocks({"from": 0.1, "to": 0.2}, 30) == [3, 4, 5]  # 0.1 * 30 is 3.0000000000000004


def test_strict_bounds():
    with pytest.raises(ScopeError, match="exceeds the model's 8 blocks"):
        select_blocks("[0, 9)", 8)
    assert select_blocks("[0, 9)", 8, strict=False) == list(range(8))
    with pytest.raises(ScopeError, match="beyond the model's 4 blocks"):
        select_blocks([1, 7], 4)
    assert select_blocks([1, 7], 4, strict=False) == [1]


@pytest.mark.parametrize("spec", ["[5, 5)", "[2, 1)", "firsthalf", [-1], [True], {"from": 0.5, "to": 0.5}, 3])
def test_bad_specs(spec):
    with pytest.raises(ScopeError):
        select_blocks(spec, 10)


def test_expand_modules():
    assert expand_modules(["attn"]) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert expand_modules(["mlp", "up_proj", "lm_head"]) == ["gate_proj", "up_proj", "down_proj", "lm_head"]
    assert "lm_head" not in expand_modules(["attn", "mlp"])
    with pytest.raises(ScopeError, match="unknown module 'qproj'"):
        expand_modules(["qproj"])


def test_parse_pattern():
    assert parse_pattern("2:4") == (2, 4)
    assert parse_pattern(None) is None
    assert parse_pattern((2, 4)) == (2, 4)
    for bad in ("4:4", "0:4", "4:2", "2-4", 2, "2:4:8", (2, 4, 8)):
        with pytest.raises(PatternError):
            parse_pattern(bad)


def test_default_scope_and_inheritance():
    plan = assign_scopes({"method": "wanda", "sparsity": 0.4}, 2)
    assert len(plan) == 2 * 7
    a = plan[(1, "down_proj")]
    assert (a.scope, a.method, a.sparsity, a.pattern, a.precedence) == ("all", "wanda", 0.4, None, None)


def test_precedence_and_lm_head():
    prune = {"sparsity": 0.5, "pattern": "2:4", "scopes": [
        {"name": "mlp", "modules": ["mlp"], "blocks": "all", "precedence": 0},
        {"name": "early", "modules": ["up_proj", "lm_head"], "blocks": "[0, 2)", "sparsity": 0.7,
         "pattern": None, "method": "magnitude", "precedence": 5},
    ]}
    plan = assign_scopes(prune, 4)
    assert plan[(0, "up_proj")].scope == "early" and plan[(0, "up_proj")].method == "magnitude"
    assert plan[(0, "up_proj")].pattern == (2, 4)  # null scope pattern falls back to prune.pattern
    assert plan[(3, "up_proj")].scope == "mlp"
    assert plan[(-1, "lm_head")].sparsity == 0.7
    assert (0, "q_proj") not in plan


def test_overlap_error_names_both():
    prune = {"scopes": [{"name": "a", "modules": ["attn"]},
                        {"name": "b", "modules": ["q_proj"], "blocks": [3], "precedence": 1}]}
    with pytest.raises(ScopeOverlapError) as exc:
        assign_scopes(prune, 6)
    assert (exc.value.first, exc.value.second, exc.value.block, exc.value.module) == ("a", "b", 3, "q_proj")
    assert "'a' and 'b' both select block 3 q_proj" in str(exc.value)
    assert isinstance(exc.value, ValueError)
