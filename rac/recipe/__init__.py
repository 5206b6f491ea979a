"""Recipe system: load (base chains, overlays, overrides, interpolation), validate, scopes, grids, diffs.

Nothing here imports torch or transformers: recipes are checked before any model work starts.
"""

from rac.recipe.diff import ABSENT, RecipeChange, diff_recipes
from rac.recipe.errors import Location, RecipeError, RecipeIssue
from rac.recipe.grid import GridCell, expand_grid, grid_from_file, is_grid_file, recipe_hash
from rac.recipe.load import LoadedRecipe, load_recipe
from rac.recipe.overrides import Override
from rac.recipe.schema import SCHEMA_PATH, fill_defaults, recipe_schema
from rac.recipe.scopes import (
    ScopeAssignment,
    ScopeError,
    ScopeOverlapError,
    assign_scopes,
    expand_modules,
    parse_pattern,
    select_blocks,
)
from rac.recipe.validate import load_and_validate, validate

__all__ = [
    "ABSENT",
    "SCHEMA_PATH",
    "GridCell",
    "LoadedRecipe",
    "Location",
    "Override",
    "RecipeChange",
    "RecipeError",
    "RecipeIssue",
    "ScopeAssignment",
    "ScopeError",
    "ScopeOverlapError",
    "assign_scopes",
    "diff_recipes",
    "expand_grid",
    "expand_modules",
    "fill_defaults",
    "grid_from_file",
    "is_grid_file",
    "load_and_validate",
    "load_recipe",
    "parse_pattern",
    "recipe_hash",
    "recipe_schema",
    "select_blocks",
    "validate",
]
