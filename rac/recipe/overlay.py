"""Overlay fragments: recognise them among recipe files and validate them as partial recipes.

An overlay is a partial recipe merged on top of a recipe (grid ``overlays:``, ``--axis @file``).
A YAML file is read as an overlay when it has no ``version`` and no grid keys (``axes``,
``overlays``) and at least one of:

- it lies under a directory named ``overlays`` (``recipes/overlays/model/14b.yaml``);
- its leading comments contain the marker line ``# rac: overlay``;
- a grid file being checked alongside it lists it in ``overlays:``.

Anything else without ``version`` is a recipe, so a recipe that forgot ``version`` is still told so.
A fragment is checked against the recipe schema minus the keys a base recipe can supply: mappings
merge key by key, so ``required`` is waived on every mapping reached through mappings only; list
items replace whole lists and keep their required keys (a task still needs ``name`` and ``type``).
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator

from rac.recipe.errors import Location, RecipeError, RecipeIssue
from rac.recipe.load import LoadedRecipe, PathLike
from rac.recipe.schema import deref, recipe_schema
from rac.recipe.source import RecipeLoader

MARKER = re.compile(r"^\s*#\s*rac:\s*overlay\s*$")
GRID_MARKERS = ("axes", "overlays")
KINDS = ("recipe", "overlay", "grid")


def _head_comments(text: str) -> Iterable[str]:
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            return
        yield line


def file_kind(path: PathLike, grid_overlays: Iterable[str] = ()) -> str:
    """``"recipe"``, ``"overlay"`` or ``"grid"`` (see the module docstring).

    ``grid_overlays``: real paths of overlay files that grids list. Unreadable or invalid files
    are ``"recipe"``: loading them as one reports the problem where it is.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
        data = yaml.load(text, Loader=RecipeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return "recipe"
    if not isinstance(data, dict):
        return "recipe"
    if any(key in data for key in GRID_MARKERS):
        return "grid"
    if "version" in data:
        return "recipe"
    real = os.path.realpath(path)
    if ("overlays" in Path(real).parent.parts or any(MARKER.match(line) for line in _head_comments(text))
            or real in set(grid_overlays)):
        return "overlay"
    return "recipe"


def grid_overlay_files(grid_paths: Iterable[PathLike]) -> set[str]:
    """Real paths of the overlay files the given grid files list (unreadable grids are skipped)."""
    out: set[str] = set()
    for grid in grid_paths:
        try:
            data = yaml.load(Path(grid).read_text(encoding="utf-8"), Loader=RecipeLoader)
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue
        axes = data.get("overlays") if isinstance(data, dict) else None
        for axis in axes if isinstance(axes, list) else []:
            for item in axis if isinstance(axis, list) else []:
                if isinstance(item, str):
                    out.add(os.path.realpath(os.path.join(os.path.dirname(os.fspath(grid)), item)))
    return out


def _partial(schema: dict, root: dict) -> dict:
    """``schema`` with ``required`` dropped on mappings reached through mappings (not list items)."""
    schema = copy.deepcopy(deref(schema, root))
    schema.pop("required", None)
    if isinstance(schema.get("properties"), dict):
        schema["properties"] = {k: _partial(v, root) for k, v in schema["properties"].items()}
    for key in ("oneOf", "anyOf", "allOf"):
        if isinstance(schema.get(key), list):
            schema[key] = [_partial(s, root) for s in schema[key]]
    return schema


@lru_cache(maxsize=1)
def _fragment_validator() -> Draft202012Validator:
    root = recipe_schema()
    schema = _partial(root, root)
    schema["$defs"] = root.get("$defs", {})  # list items keep their refs into the full definitions
    return Draft202012Validator(schema)


def _interpolated(value: Any) -> bool:
    return isinstance(value, str) and "${" in value


def validate_fragment(loaded: LoadedRecipe) -> list[RecipeIssue]:
    """Schema issues of an overlay fragment, located; values still holding ``${...}`` are not typed
    here (they resolve against the recipe the overlay is applied to, and are checked there)."""
    from rac.recipe.validate import _issues  # the same messages as for whole recipes

    issues: list[RecipeIssue] = []
    for err in _fragment_validator().iter_errors(loaded.raw):
        if _interpolated(err.instance):
            continue
        issues.extend(_issues(err, loaded))
    issues.sort(key=lambda i: (i.location.file, i.location.line, i.location.col))
    return issues


def load_fragment(path: PathLike) -> LoadedRecipe:
    """Read an overlay (its own ``base`` chain merged) and validate it as a partial recipe.

    ``data`` and ``raw`` both hold what the overlay sets (no defaults, no interpolation: both
    belong to the recipe it is applied to). Raises RecipeError with every issue.
    """
    from rac.recipe.load import _load_chain

    display = os.fspath(path)
    data, smap, files = _load_chain(display, [], None, "overlay")
    if not data:
        raise RecipeError([RecipeIssue(Location(display, 1, 1), "$", "an overlay must set at least one key")])
    loaded = LoadedRecipe(path=Path(display), data=data, raw=data, source_map=smap,
                          files=[Path(f) for f in files])
    issues = validate_fragment(loaded)
    if issues:
        raise RecipeError(issues)
    return loaded
