"""Compare two recipe files of any kind (recipe, overlay, grid), portably (no check of this machine).

- recipe vs recipe: the resolved recipes (defaults filled, interpolations resolved).
- overlay vs overlay: what each fragment sets.
- recipe vs overlay (either order): the recipe against the recipe with the overlay applied, i.e.
  what applying that overlay does to that recipe.
- grid vs grid: cells are matched by label (the axis values, without the recipe hash): cells only in
  the new grid are added, only in the old one removed, and cells whose resolved recipe differs changed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rac.recipe.diff import RecipeChange, diff_recipes
from rac.recipe.errors import Location, RecipeError, RecipeIssue
from rac.recipe.gitrev import Tree
from rac.recipe.overlay import file_kind, grid_overlay_files
from rac.recipe.source import RecipeLoader

_HASH = re.compile(r"_?[0-9a-f]{8}$")
BASE_CELL = "(base)"


@dataclass
class Side:
    """One loaded file: its kind, label and resolved content (recipe/overlay ``data``, grid ``cells``)."""

    label: str
    kind: str
    path: str
    data: dict | None = None
    cells: dict[str, dict] = field(default_factory=dict)


@dataclass
class CellChange:
    """A grid cell that was added, removed or changed (``old``/``new``: its resolved recipes)."""

    name: str
    status: str  # "added" | "removed" | "changed"
    old: dict | None
    new: dict | None
    changes: list[RecipeChange] = field(default_factory=list)


@dataclass
class Comparison:
    """The difference between two sides; ``old``/``new`` are the recipes whose stages re-run
    (None for overlay-only comparisons, which have no stages of their own)."""

    a: Side
    b: Side
    changes: list[RecipeChange] = field(default_factory=list)
    cells: list[CellChange] = field(default_factory=list)
    old: dict | None = None
    new: dict | None = None
    unchanged_cells: int = 0
    status: str = "changed"  # or "added" / "removed": the file exists (with this kind) on one side only

    @property
    def different(self) -> bool:
        return bool(self.changes or self.cells)


def cell_label(name: str) -> str:
    """A grid cell's name without its recipe hash (``sparsity-0.3_1a2b3c4d`` -> ``sparsity-0.3``)."""
    return _HASH.sub("", name) or BASE_CELL


def load_side(path: str, label: str | None = None, tree: Tree | None = None,
              grid_overlays: set[str] | None = None) -> Side:
    """Load and validate a recipe, overlay or grid file without checking this machine.

    ``tree`` (a git revision copy) relabels error locations as ``REV:path`` and maps data paths back.
    """
    from rac.recipe.grid import expand_grid
    from rac.recipe.overlay import load_fragment
    from rac.recipe.validate import load_and_validate

    kind = file_kind(path, grid_overlays or set())
    side = Side(label or path, kind, path)
    try:
        if kind == "grid":
            cells = expand_grid(grid_file=path, environment=False)
            labels = [cell_label(cell.name) for cell in cells]
            for cell, label in zip(cells, labels):  # a label two cells share keeps the hash
                data = tree.unmap(cell.loaded.data) if tree else cell.loaded.data
                side.cells[label if labels.count(label) == 1 else cell.name] = data
        elif kind == "overlay":
            side.data = load_fragment(path).raw
        else:
            loaded = load_and_validate(path, environment=False)
            side.data = tree.unmap(loaded.data) if tree else loaded.data
    except RecipeError as exc:
        raise (tree.relabel(exc) if tree else exc) from None
    return side


def _apply(recipe_path: str, overlay_path: str, *trees: Tree | None) -> dict:
    """The recipe with the overlay merged on top (each may come from a git revision copy)."""
    from rac.recipe.validate import load_and_validate

    real = [t for t in trees if t is not None]
    try:
        data = load_and_validate(recipe_path, overlays=[overlay_path], environment=False).data
    except RecipeError as exc:
        for tree in real:
            exc = tree.relabel(exc)
        raise exc from None
    for tree in real:
        data = tree.unmap(data)
    return data


def compare(a: Side, b: Side, a_tree: Tree | None = None, b_tree: Tree | None = None) -> Comparison:
    """The differences from ``a`` to ``b`` (see the module docstring for mixed kinds)."""
    kinds = {a.kind, b.kind}
    if "grid" in kinds and kinds != {"grid"}:
        where = a if a.kind != "grid" else b
        raise RecipeError([RecipeIssue(Location(where.label, 1, 1), "$",
                                       f"cannot compare a {a.kind} with a {b.kind}; diff two grids, or a cell's "
                                       "recipe with `rac show` output")])
    if kinds == {"grid"}:
        return _compare_grids(a, b)
    if a.kind == "recipe" and b.kind == "overlay":
        assert a.data is not None
        new = _apply(a.path, b.path, a_tree, b_tree)
        return Comparison(a, b, diff_recipes(a.data, new), old=a.data, new=new)
    if a.kind == "overlay" and b.kind == "recipe":
        assert b.data is not None
        old = _apply(b.path, a.path, b_tree, a_tree)
        return Comparison(a, b, diff_recipes(old, b.data), old=old, new=b.data)
    assert a.data is not None and b.data is not None
    both_recipes = a.kind == b.kind == "recipe"
    return Comparison(a, b, diff_recipes(a.data, b.data), old=a.data if both_recipes else None,
                      new=b.data if both_recipes else None)


def _compare_grids(a: Side, b: Side) -> Comparison:
    out = Comparison(a, b)
    for name in list(a.cells) + [n for n in b.cells if n not in a.cells]:
        old, new = a.cells.get(name), b.cells.get(name)
        if old is None:
            out.cells.append(CellChange(name, "added", None, new))
        elif new is None:
            out.cells.append(CellChange(name, "removed", old, None))
        else:
            changes = diff_recipes(old, new)
            if changes:
                out.cells.append(CellChange(name, "changed", old, new, changes))
            else:
                out.unchanged_cells += 1
    return out


def tree_sides(tree: Tree, under: str) -> dict[str, tuple[str, str]]:
    """Repository-relative path -> (kind, path on disk) for the rac files of a tree below ``under``."""
    rels = tree.yaml_files(under)
    paths = {rel: str(tree.path(rel)) for rel in rels}
    grids = [p for p in paths.values() if file_kind(p) == "grid"]
    refs = grid_overlay_files(grids)
    return {rel: (file_kind(p, refs), p) for rel, p in paths.items()}


def _refs(path: str) -> list[str]:
    """Files one file reads directly: its ``base``, a grid's ``recipe`` and ``overlays`` (real paths)."""
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=RecipeLoader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return []
    if not isinstance(data, dict):
        return []
    names = [data.get("base"), data.get("recipe")]
    overlays = data.get("overlays")
    names += [o for axis in overlays if isinstance(axis, list) for o in axis] if isinstance(overlays, list) else []
    here = os.path.dirname(path)
    return [os.path.realpath(os.path.join(here, os.path.expanduser(n))) for n in names if isinstance(n, str) and n]


def dependencies(path: str) -> set[str]:
    """Real paths of every file a recipe, overlay or grid resolves from (itself included)."""
    seen: set[str] = set()
    todo = [os.path.realpath(path)]
    while todo:
        current = todo.pop()
        if current not in seen:
            seen.add(current)
            todo += _refs(current)
    return seen


def _changed_files(base: Tree, head: Tree, rels: set[str]) -> set[str]:
    """Real paths (in both trees) of the YAML files whose bytes differ or exist on one side only."""
    out: set[str] = set()
    for rel in rels:
        a, b = base.path(rel), head.path(rel)
        if not (a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()):
            out |= {os.path.realpath(a), os.path.realpath(b)}
    return out


@dataclass
class TreeReview:
    """Every rac file that resolves differently between two trees, and the files that fail."""

    comparisons: list[Comparison] = field(default_factory=list)
    errors: list[tuple[str, RecipeError]] = field(default_factory=list)  # new side only
    notes: list[str] = field(default_factory=list)
    files_checked: int = 0


def review_trees(base: Tree, head: Tree, under: str = "recipes") -> TreeReview:
    """Compare every recipe, overlay and grid below ``under`` at two trees (by resolved content, so a
    recipe whose ``base`` changed, or a grid whose overlay changed, is listed with what changed)."""
    old_files, new_files = tree_sides(base, under), tree_sides(head, under)
    changed = _changed_files(base, head, set(base.yaml_files()) | set(head.yaml_files()))
    review = TreeReview()
    refs_old = {p for _, (k, p) in old_files.items() if k == "overlay"}
    refs_new = {p for _, (k, p) in new_files.items() if k == "overlay"}
    for rel in sorted(set(old_files) | set(new_files)):
        review.files_checked += 1
        if rel in old_files and rel in new_files and not (
                dependencies(old_files[rel][1]) & changed or dependencies(new_files[rel][1]) & changed):
            continue  # neither the file nor anything it reads changed: it resolves the same
        old_side = new_side = None
        if rel in new_files:
            try:
                new_side = load_side(new_files[rel][1], rel, head, refs_new)
            except RecipeError as exc:
                review.errors.append((head.label(rel), exc))
                continue
        if rel in old_files:
            try:
                old_side = load_side(old_files[rel][1], rel, base, refs_old)
            except RecipeError as exc:
                review.notes.append(f"{base.label(rel)} did not load at the base revision "
                                    f"({len(exc.issues)} issue(s)); compared as absent")
        if old_side is None and new_side is None:
            continue
        if old_side is None or new_side is None or old_side.kind != new_side.kind:
            review.comparisons += [_one_sided(old_side, None), _one_sided(None, new_side)] if old_side and new_side \
                else [_one_sided(old_side, new_side)]
            continue
        comparison = compare(old_side, new_side, base, head)
        if comparison.different:
            review.comparisons.append(comparison)
    return review


def _one_sided(old: Side | None, new: Side | None) -> Comparison:
    """A file on one side only (or whose kind changed): every cell or key is added or removed."""
    present = new or old
    assert present is not None
    empty = Side(present.label, present.kind, "", {} if present.kind != "grid" else None)
    a, b = old or empty, new or empty
    status = "added" if old is None else "removed"
    if present.kind == "grid":
        out = _compare_grids(a, b)
        out.status = status
        return out
    recipe = present.kind == "recipe"
    return Comparison(a, b, diff_recipes(a.data or {}, b.data or {}),
                      old=a.data if recipe and old is not None else None,
                      new=b.data if recipe and new is not None else None, status=status)


def validate_tree(tree: Tree, under: str = "recipes") -> tuple[int, list[tuple[str, RecipeError]]]:
    """Validate (portably) every recipe, overlay and grid below ``under``: (files checked, failures)."""
    files = tree_sides(tree, under)
    refs = {p for kind, p in files.values() if kind == "overlay"}
    failures = []
    for rel, (_, path) in sorted(files.items()):
        try:
            load_side(path, rel, tree, refs)
        except RecipeError as exc:
            failures.append((tree.label(rel), exc))
    return len(files), failures
