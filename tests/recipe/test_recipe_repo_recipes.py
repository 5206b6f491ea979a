"""Every recipe (and grid) under recipes/ resolves and validates."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rac.recipe import expand_grid, is_grid_file, load_and_validate

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
FILES = sorted(RECIPES.rglob("*.yaml")) if RECIPES.is_dir() else []


def _is_overlay(path: Path) -> bool:
    """Overlay fragments (no version, no base) are partial recipes used by grids, not recipes."""
    data = yaml.safe_load(path.read_text())
    return isinstance(data, dict) and "version" not in data and "base" not in data


@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(RECIPES)) for p in FILES])
def test_recipe_validates(path):
    if is_grid_file(path):
        assert expand_grid(grid_file=path)
    elif _is_overlay(path):
        pytest.skip("overlay fragment (checked through the grids that use it)")
    else:
        load_and_validate(path)


def test_some_recipes_exist_or_skip():
    if not FILES:
        pytest.skip("no recipes under recipes/ yet")
    assert FILES
