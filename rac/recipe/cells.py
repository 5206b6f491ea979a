"""Pick cells of a grid by name (one for ``rac plan`` / ``rac show``, some for ``rac grid --cell``).

A name matches a cell exactly, by its prefix without the recipe hash (``14b_rac_sparsity-0.5``), or
as a unique substring. No match, or several, is an error that lists the cells (and the closest one).
"""

from __future__ import annotations

from collections.abc import Sequence

from rac.errors import RacError
from rac.recipe.grid import GridCell
from rac.suggest import did_you_mean

MAX_LISTED = 60


class CellError(RacError, ValueError):
    """No unique grid cell for a name; the message lists the candidates."""


def _listing(cells: Sequence[GridCell]) -> str:
    names = [c.name for c in cells[:MAX_LISTED]]
    more = f"\n  ... and {len(cells) - MAX_LISTED} more" if len(cells) > MAX_LISTED else ""
    return "\n  " + "\n  ".join(names) + more


def pick_cell(cells: Sequence[GridCell], name: str | None, grid: str) -> GridCell:
    """The cell ``name`` designates (see module docstring); a one-cell grid needs no name."""
    if name is None:
        if len(cells) == 1:
            return cells[0]
        raise CellError(f"{grid} is a grid of {len(cells)} cells; pick one with --cell NAME:{_listing(cells)}")
    exact = [c for c in cells if c.name == name]
    if exact:
        return exact[0]
    for matches in ([c for c in cells if c.name.rsplit("_", 1)[0] == name],
                    [c for c in cells if c.name.startswith(name)],
                    [c for c in cells if name in c.name]):
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise CellError(f"--cell {name!r} matches {len(matches)} cells of {grid}:{_listing(matches)}")
    hint = did_you_mean(name, [c.name for c in cells], cutoff=0.5)
    raise CellError(f"--cell {name!r}: no such cell in {grid}{hint}; cells:{_listing(cells)}")


def select_cells(cells: Sequence[GridCell], names: Sequence[str] | None, grid: str) -> list[GridCell]:
    """The cells ``names`` designate (each as :func:`pick_cell`), in grid order; all cells without names."""
    if not names:
        return list(cells)
    chosen = {pick_cell(cells, name, grid).name for name in names}
    return [c for c in cells if c.name in chosen]
