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
from rac.report.runs import RunRecord
from rac.report.tables import ReportTable, to_csv, to_markdown
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
    root = Path(root)
    for record in records:
        try:
            parts = [root.resolve().name, *record.path.resolve().relative_to(root.resolve()).parts]
        except ValueError:
            parts = [root.name]
        names = [m.group(1) for part in parts if (m := _DETECT.match(part.lower()))]
        found.add(names[-1] if names else None)
    return found.pop() if len(found) == 1 else None


def render_paper(name: str, records: Sequence[RunRecord], out_dir: Path | None,
                 aggregate: Sequence[str] = ()) -> tuple[ReportTable, list[Path]]:
    """(the layout's table, files written): ``paper_<name>.md`` / ``.csv`` and any PNGs under ``out_dir``."""
    name = paper_layout(name)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    table, written = LAYOUTS[name](records, out_dir, aggregate)
    if out_dir is None:
        return table, written
    markdown, csv = Path(out_dir) / f"paper_{name}.md", Path(out_dir) / f"paper_{name}.csv"
    markdown.write_text(to_markdown(table))
    csv.write_text(to_csv(table))
    return table, [markdown, csv, *written]
