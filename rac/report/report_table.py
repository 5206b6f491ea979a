"""The report's table model and its two writers (markdown, CSV): shared by the default table and
the paper layouts, kept apart from them so every layout module can build one without importing the others."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from rac.markdown import markdown_table


@dataclass
class ReportTable:
    """Rows of string cells; ``best[i][j]`` marks a highlighted cell.

    The first ``lead`` columns label the row; the rest are "<metric> (<kind>)" for every metric in
    ``metrics`` and calibration column in ``kinds`` (so a terminal can pivot them).
    """

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    best: list[list[bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    lead: int = 2
    kinds: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)


def to_markdown(table: ReportTable) -> str:
    """GitHub markdown (the one writer, rac.markdown); best cells in bold."""
    rows = ([f"**{c}**" if b else c for c, b in zip(cells, best)] for cells, best in zip(table.rows, table.best))
    lines = [f"**{table.title}**", "", *markdown_table(table.columns, rows)]
    lines.extend(["", *(f"_{note}_" for note in table.notes)])
    return "\n".join(lines).rstrip() + "\n"


def to_csv(table: ReportTable) -> str:
    """CSV of the cells (no highlighting) with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()
