"""Every recipe (and grid) under recipes/ resolves and validates."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rac.recipe import RecipeError, expand_grid, is_grid_file, load_and_validate
from rac.recipe.overlay import file_kind, load_fragment

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FILES = sorted(RECIPES.rglob("*.yaml")) if RECIPES.is_dir() else []


def _environment_only(exc: RecipeError) -> bool:
    return all("is not installed" in issue.message for issue in exc.issues)


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RECIPES)) for p in FILES])
def test_recipe_validates(path):
    """Each recipe is valid as a recipe; on this machine the only extra issues may be missing engines
    (the paper recipes use vLLM, which the CPU test environment does not have)."""
    if file_kind(path) == "overlay":  # a partial recipe: checked alone here, and through its grids
        assert load_fragment(path).raw
        return
    if is_grid_file(path):
        assert expand_grid(grid_file=path, environment=False)
        check = lambda: expand_grid(grid_file=path)
    else:
        load_and_validate(path, environment=False)
        check = lambda: load_and_validate(path)
    try:
        check()
    except RecipeError as exc:
        assert importlib.util.find_spec("vllm") is None and _environment_only(exc), str(exc)


def test_the_recipes_the_readme_names_are_validated_here():
    """The parametrized test above must not silently run on nothing: the recipes the README and the
    paper grids use are among the files it checks."""
    names = {str(p.relative_to(RECIPES)) for p in FILES}
    assert {"7b_50pct.yaml", "demo/demo.yaml", "demo/mlp24_fp8.yaml", "paper/base.yaml"} <= names
    assert sum(name.startswith("grids/") for name in names) >= 5
