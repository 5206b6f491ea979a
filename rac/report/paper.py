"""``rac report RUNS --paper NAME``: the paper's tables and figures in the paper's own layout.

Each layout returns a :class:`rac.report.tables.ReportTable` (rendered to the terminal by ``rac.ui``,
written as ``paper_<name>.md`` / ``.csv``) and, for figures and the length report, PNGs. Without
``--paper`` the layout is detected from the grid directory's name (``rac grid`` writes each grid's runs
under ``<output_dir>/<grid file stem>``, e.g. ``runs/table1_math500``); an explicit ``--paper`` wins.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from rac.errors import UsageError
from rac.report.length import length_table, write_length_plots
from rac.report.paper_figures import figure1, figure2
from rac.report.paper_table4 import table4
from rac.report.paper_tables import table1, table2, table3, table5
from rac.report.report_table import ReportTable, to_csv, to_markdown
from rac.report.runs import RunRecord
from rac.suggest import did_you_mean

Build = Callable[[Sequence[RunRecord], "Path | None", Sequence[str]], tuple[ReportTable, list[Path]]]


def _table(fn: Callable[[Sequence[RunRecord], Sequence[str]], ReportTable]) -> Build:
    return lambda records, out_dir, aggregate: (fn(records, aggregate), [])


def _length(records: Sequence[RunRecord], out_dir: Path | None, aggregate: Sequence[str]) -> tuple[ReportTable, list[Path]]:
    table = length_table(records, aggregate)
    return table, write_length_plots(records, out_dir, aggregate) if out_dir is not None else []


LAYOUTS: dict[str, Build] = {
    "table1": _table(table1), "table2": _table(table2), "table3": _table(table3), "table4": _table(table4),
    "table5": _table(table5), "figure1": figure1, "figure2": figure2, "length": _length,
}
_DETECT = re.compile(r"^(table[1-5]|figure[12]|length)(?:$|[_\-.])")
# the grid directories (name prefixes) each layout reads when pointed at a directory holding several grids;
# Figure 1's dense point is Table 1's dense cell
SOURCES = {name: (name,) for name in LAYOUTS} | {"figure1": ("figure1", "table1_dense")}


def _parts(root: Path, record: RunRecord) -> list[str]:
    try:
        return [root.resolve().name, *record.path.resolve().relative_to(root.resolve()).parts]
    except ValueError:
        return [root.name]


def select_runs(name: str, root: Path, records: Sequence[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """(the runs of the layout's own grids, a note) when ``root`` holds grid directories named after
    layouts (``runs/paper/table1_math500``, ``runs/paper/table5_budgets``, ...): the same cell recurs in
    several grids (Table 5's dense 32k cell is Table 1's), so a mixed directory would collide. All runs
    when no run sits under a directory of the layout's grids."""
    prefixes = SOURCES[paper_layout(name)]
    chosen = [r for r in records if any(part.lower().startswith(prefixes) for part in _parts(Path(root), r))]
    if not chosen or len(chosen) == len(records):
        return list(records), []
    return chosen, [f"read the {len(chosen)} runs under {root} in grid directories named {' / '.join(p + '*' for p in prefixes)}; "
                    f"{len(records) - len(chosen)} other runs not read"]


def paper_layout(name: str) -> str:
    """``name`` checked against the known layouts (a UsageError with a "did you mean" hint otherwise)."""
    key = str(name).strip().lower().replace(" ", "")
    if key not in LAYOUTS:
        raise UsageError(f"--paper {name}: unknown layout{did_you_mean(key, LAYOUTS)}; one of {', '.join(LAYOUTS)}")
    return key


def detect_layout(root: Path, records: Sequence[RunRecord]) -> str | None:
    """The layout named by the grid directory (``root`` or the directories between it and each run),
    when all runs agree on one; None otherwise."""
    found: set[str | None] = set()
    for record in records:
        names = [m.group(1) for part in _parts(Path(root), record) if (m := _DETECT.match(part.lower()))]
        found.add(names[-1] if names else None)
    return found.pop() if len(found) == 1 else None


def render_paper(name: str, records: Sequence[RunRecord], out_dir: Path | None,
                 aggregate: Sequence[str] = (), root: Path | None = None) -> tuple[ReportTable, list[Path]]:
    """(the layout's table, files written): ``paper_<name>.md`` / ``.csv`` and any PNGs under ``out_dir``;
    with ``root`` (the directory reported on) only the runs of the layout's grids (:func:`select_runs`)."""
    name = paper_layout(name)
    records, selected = select_runs(name, root, records) if root is not None else (list(records), [])
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    table, written = LAYOUTS[name](records, out_dir, aggregate)
    table.notes += selected
    if out_dir is None:
        return table, written
    markdown, csv = Path(out_dir) / f"paper_{name}.md", Path(out_dir) / f"paper_{name}.csv"
    markdown.write_text(to_markdown(table))
    csv.write_text(to_csv(table))
    return table, [markdown, csv, *written]
