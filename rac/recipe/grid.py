"""Grids: the cartesian product of override axes and overlay axes, each cell resolved and validated.

CLI axes: ``key=v1,v2`` (values YAML-parsed; ``+key`` / ``++key`` as for overrides) or
``@a.yaml,@b.yaml`` (overlays: partial recipes merged on top, paths relative to the working
directory). A grid file is YAML with ``version``, ``recipe`` (relative to the grid file), ``axes``
(key -> list of values) and/or ``overlays`` (a list of overlay lists, relative to the grid file).
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

import rac
from rac.hashing import recipe_hash
from rac.recipe.errors import CLI_FILE, Location, RecipeError, RecipeIssue
from rac.recipe.load import LoadedRecipe
from rac.recipe.naming import name_cells
from rac.recipe.overrides import Override
from rac.recipe.source import RecipeLoader, read_mapping, split_path
from rac.recipe.validate import validate
from rac.suggest import did_you_mean

PathLike = Union[str, "os.PathLike[str]"]
GRID_KEYS = ("version", "recipe", "axes", "overlays", "name", "description")
_OVERRIDE_KEY = re.compile(r"^(\+\+|\+)?([^=]+)=(.*)$", re.DOTALL)


@dataclass(frozen=True)
class GridCell:
    """One grid cell: its run name, the overrides (and ``@overlay`` entries) that define it, the recipe."""

    name: str
    overrides: tuple[str, ...]
    loaded: LoadedRecipe


@dataclass(frozen=True)
class _Choice:
    """One value of one axis: an override, or an overlay file."""

    label_key: str  # axis key ("prune.sparsity") or "" for overlays
    value_text: str
    override: Override | None = None
    overlay: str | None = None

    @property
    def text(self) -> str:
        return self.override.text if self.override else f"@{self.overlay}"


def split_values(text: str) -> list[str]:
    """Split ``a,b,[1, 2],'x,y'`` on top-level commas (brackets, braces and quotes kept together)."""
    out, depth, quote, current = [], 0, "", ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(current.strip())
            current = ""
            continue
        current += ch
    out.append(current.strip())
    return out


def _value_text(value: Any) -> str:
    """A value as override text (plain when YAML reads it back unchanged, else JSON/flow)."""
    if isinstance(value, str):
        try:
            if yaml.load(value, Loader=RecipeLoader) == value and "," not in value:
                return value
        except yaml.YAMLError:
            pass
    return json.dumps(value)


def _cli_axis(axis: str, index: int) -> list[_Choice]:
    loc = Location(CLI_FILE, index, 1)
    if axis.startswith("@"):
        files = split_values(axis)
        bad = [f for f in files if not f.startswith("@") or len(f) < 2]
        if bad:
            raise RecipeError([RecipeIssue(loc, "$", f"overlay axis {axis!r}: every entry needs '@file.yaml'")])
        return [_Choice("", f[1:], overlay=f[1:]) for f in files]
    match = _OVERRIDE_KEY.match(axis)
    if not match or not match.group(3).strip():
        raise RecipeError([RecipeIssue(loc, "$", f"cannot parse axis {axis!r}; expected key=v1,v2 or @a.yaml,@b.yaml")])
    prefix, key, values = match.group(1) or "", match.group(2).strip(), match.group(3)
    return [_Choice(key, v, override=Override(f"{prefix}{key}={v}", loc)) for v in split_values(values)]


def _file_axes(grid_path: str) -> tuple[str | None, list[list[_Choice]]]:
    """Read a grid file: (recipe path or None, axes)."""
    data, smap = read_mapping(Path(grid_path), grid_path, None, "grid")
    issues = [RecipeIssue(smap[k], f"$.{k}", f"unknown grid key {k!r}{did_you_mean(k, GRID_KEYS)}")
              for k in data if k not in GRID_KEYS]
    if "version" in data and data["version"] not in rac.RECIPE_VERSIONS:
        issues.append(RecipeIssue(smap["version"], "$.version", f"unsupported grid version {data['version']!r}; "
                                  f"this rac reads versions: {', '.join(map(str, rac.RECIPE_VERSIONS))}"))
    here = os.path.dirname(grid_path)
    axes: list[list[_Choice]] = []
    raw_axes = data.get("axes") or {}
    if not isinstance(raw_axes, dict):
        issues.append(RecipeIssue(smap.get("axes", smap[""]), "$.axes", "axes must map keys to lists of values"))
        raw_axes = {}
    for key, values in raw_axes.items():
        where = smap.get(f"axes.{key}", smap[""])
        if not isinstance(values, list) or not values:
            issues.append(RecipeIssue(where, f"$.axes.{key}", "an axis needs a non-empty list of values"))
            continue
        name = str(key).lstrip("+")
        axes.append([_Choice(name, _value_text(v), override=Override(f"{key}={_value_text(v)}",
                                                                       smap.get(f"axes.{key}[{i}]", where)))
                     for i, v in enumerate(values)])
    overlays = data.get("overlays") or []
    if not isinstance(overlays, list) or not all(isinstance(o, list) and o for o in overlays):
        issues.append(RecipeIssue(smap.get("overlays", smap[""]), "$.overlays", "overlays must be a list of lists of files"))
        overlays = []
    for axis in overlays:
        axes.append([_Choice("", str(f), overlay=os.path.join(here, str(f))) for f in axis])
    recipe = data.get("recipe")
    if recipe is not None and not isinstance(recipe, str):
        issues.append(RecipeIssue(smap["recipe"], "$.recipe", "recipe must be a path relative to the grid file"))
    if issues:
        raise RecipeError(issues)
    return (os.path.join(here, recipe) if recipe else None), axes


def _parts(key: str) -> list[str]:
    """``prune.scopes[0].sparsity`` -> ``["prune", "scopes0", "sparsity"]``."""
    out: list[str] = []
    for tok in split_path(key.lstrip("+")):
        if isinstance(tok, int) and out:
            out[-1] += str(tok)
        else:
            out.append(str(tok))
    return out


def _labels(cells: list[tuple[_Choice, ...]]) -> list[str]:
    """Readable labels: the shortest unique key suffix plus the value (overlays: file stem)."""
    keys = sorted({c.label_key for cell in cells for c in cell if c.label_key})
    short: dict[str, str] = {}
    for key in keys:
        parts = _parts(key)
        for n in range(1, len(parts) + 1):
            tail = parts[-n:]
            if sum(1 for k in keys if _parts(k)[-n:] == tail) == 1:
                short[key] = "-".join(tail)
                break
        else:
            short[key] = key
    labels = []
    for cell in cells:
        bits = [f"{short[c.label_key]}-{c.value_text}" if c.label_key else
                os.path.splitext(os.path.basename(c.value_text))[0] for c in cell]
        clean = [re.sub(r"-{2,}", "-", re.sub(r"[^A-Za-z0-9._-]+", "-", b)).strip("-") for b in bits]
        labels.append("_".join(b for b in clean if b)[:80])
    return labels


def expand_grid(recipe_path: PathLike | None = None, axes: Sequence[str] = (), grid_file: PathLike | None = None,
                overrides: Sequence[str] = (), environment: bool = True) -> list[GridCell]:
    """Expand a grid to its cells, every one resolved and validated (one RecipeError for all cells).

    ``environment=False`` skips the checks of this machine (see ``validate``).

    Order: the grid file's axes, then its overlay axes, then CLI ``axes``; the last axis varies
    fastest. ``overrides`` apply to every cell before the axis values.
    """
    from rac.recipe.load import load_recipe

    all_axes: list[list[_Choice]] = []
    recipe = os.fspath(recipe_path) if recipe_path is not None else None
    if grid_file is not None:
        file_recipe, file_axes = _file_axes(os.fspath(grid_file))
        recipe = recipe or file_recipe
        all_axes += file_axes
    if recipe is None:
        where = Location(os.fspath(grid_file), 1, 1) if grid_file is not None else Location(CLI_FILE, 1, 1)
        raise RecipeError([RecipeIssue(where, "$.recipe", "no recipe given (pass a recipe or set 'recipe' in the grid file)")])
    base_count = len(overrides)
    cli_axes = [_cli_axis(a, base_count + i + 1) for i, a in enumerate(axes)]
    _check_axis_keys(all_axes, cli_axes, axes, base_count)
    all_axes += cli_axes
    combos = list(itertools.product(*all_axes))
    labels = _labels(combos)
    resolved: list[tuple[tuple[_Choice, ...], str, LoadedRecipe]] = []
    problems: dict[str, tuple[RecipeIssue, list[str]]] = {}
    for combo, label in zip(combos, labels):
        cell_overrides = [Override(o, Location(CLI_FILE, i + 1, 1)) for i, o in enumerate(overrides)]
        cell_overrides += [c.override for c in combo if c.override is not None]
        overlays = [c.overlay for c in combo if c.overlay is not None]
        try:
            loaded = load_recipe(recipe, cell_overrides, overlays)
            issues = validate(loaded, environment=environment)
        except RecipeError as exc:
            issues = exc.issues
        if issues:
            for issue in issues:
                problems.setdefault(str(issue), (issue, []))[1].append(label)
            continue
        resolved.append((combo, label, loaded))
    if problems:
        raise RecipeError(_annotate(problems, len(combos)))
    _check_unique([GridCell(label, (), loaded) for _, label, loaded in resolved])
    where = Location(os.fspath(grid_file), 1, 1) if grid_file is not None else Location(CLI_FILE, 1, 1)
    name_cells([(label, loaded) for _, label, loaded in resolved], where)
    return [GridCell(f"{label}_{recipe_hash(loaded.data)}" if label else recipe_hash(loaded.data),
                     tuple(c.text for c in combo), loaded) for combo, label, loaded in resolved]


def _check_axis_keys(file_axes: list[list[_Choice]], cli_axes: list[list[_Choice]], texts: Sequence[str],
                     base_count: int) -> None:
    """One axis per key: ``--axis k=1 --axis k=2`` would silently collapse to one cell."""
    seen: dict[str, str] = {str(axis[0].label_key): "the grid file" for axis in file_axes
                            if axis and axis[0].label_key}
    for i, (axis, text) in enumerate(zip(cli_axes, texts)):
        key = axis[0].label_key if axis else ""
        if not key:
            continue
        if key in seen:
            values = ",".join(c.value_text for c in axis)
            raise RecipeError([RecipeIssue(Location(CLI_FILE, base_count + i + 1, 1), "$",
                                           f"axis {key!r} given twice ({seen[key]} and --axis {text}); put all "
                                           f"its values in one axis, e.g. --axis {key}=...,{values}")])
        seen[key] = f"--axis {text}"


def _annotate(problems: dict[str, tuple[RecipeIssue, list[str]]], n_cells: int) -> list[RecipeIssue]:
    out = []
    for issue, labels in problems.values():
        if len(labels) < n_cells and any(labels):
            issue = RecipeIssue(issue.location, issue.path, f"{issue.message} (grid cell {', '.join(labels)})")
        out.append(issue)
    return sorted(out, key=lambda i: (i.location.file, i.location.line, i.location.col))


def _check_unique(cells: list[GridCell]) -> None:
    seen: dict[str, GridCell] = {}
    for cell in cells:
        digest = recipe_hash(cell.loaded.data)
        if digest in seen:
            raise RecipeError([RecipeIssue(Location(CLI_FILE, 1, 1), "$", f"grid cells {seen[digest].name} and "
                                           f"{cell.name} resolve to the same recipe")])
        seen[digest] = cell


def is_grid_file(path: PathLike) -> bool:
    """True when ``path`` is a YAML mapping with a top-level ``axes`` or ``overlays`` key.

    Unreadable or invalid files are not grids (loading them as recipes reports the problem).
    """
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=RecipeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and ("axes" in data or "overlays" in data)


def grid_from_file(path: PathLike) -> list[GridCell]:
    """Expand a grid file (see module docstring)."""
    return expand_grid(grid_file=path)
