"""Semantic recipe diffs."""

from __future__ import annotations

from conftest import EXAMPLE

from rac.recipe import ABSENT, RecipeChange, diff_recipes, load_recipe


def test_diff_after_defaults_and_interpolation(write):
    write("a.yaml", f"base: {EXAMPLE}\nprune:\n  block_size: 128\n")  # the default, spelled out
    write("b.yaml", f"base: {EXAMPLE}\nprune:\n  sparsity: 0.6\n")
    a, b = load_recipe("a.yaml").data, load_recipe("b.yaml").data
    assert diff_recipes(a, b) == [RecipeChange("prune.sparsity", 0.5, 0.6)]
    assert diff_recipes(a, a) == []


def test_diff_lists_of_dicts_elementwise():
    a = {"evaluate": {"tasks": [{"name": "g", "limit": 1}, {"name": "t"}]}, "q": {"ignore": ["lm_head"]}}
    b = {"evaluate": {"tasks": [{"name": "g", "limit": 2}]}, "q": {"ignore": ["lm_head", "x"]}, "n": 1}
    assert diff_recipes(a, b) == [
        RecipeChange("evaluate.tasks[0].limit", 1, 2),
        RecipeChange("evaluate.tasks[1]", {"name": "t"}, ABSENT),
        RecipeChange("q.ignore", ["lm_head"], ["lm_head", "x"]),
        RecipeChange("n", ABSENT, 1),
    ]


def test_numeric_equality_but_bool_is_not_int():
    assert diff_recipes({"x": 1}, {"x": 1.0}) == []
    assert diff_recipes({"x": 1}, {"x": True}) == [RecipeChange("x", 1, True)]
