"""The README's demo-results table, regenerated from a demo grid directory (``rac report runs/demo --format readme``).

One markdown table per compressed setting (model + compression + any other row label): rows are
the decode-fidelity probe's numbers (decode NLL with the dense model's in the header, decode- and
prompt-position L2 errors), the mean generated length of the generation task and the prune stage's
time; columns are the calibrations (C4 / prompt-only / RAC). Best probe numbers are bold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rac.markdown import markdown_table
from rac.report import metric_keys as mk
from rac.report.cells import FILL, Cell, arrange
from rac.report.runs import ReportError, RunRecord
from rac.report.tables import primary_task

METHODS = {"sparsegpt": "SparseGPT", "wanda": "Wanda", "magnitude": "magnitude"}
COLUMN_NAMES = {"prompt": "prompt-only"}


def _one(cell: Cell) -> RunRecord:
    if len(cell.runs) != 1:
        raise ReportError("the README table shows single runs; report without --aggregate")
    return cell.runs[0]


def _number(record: RunRecord, task: str | None, key: str) -> float | None:
    value = (record.evaluate.get(task) or {}).get(key) if task else None
    return float(value) if isinstance(value, (int, float)) else None


def _prune_seconds(record: RunRecord) -> float | None:
    value = ((record.metrics.get("stages") or {}).get("prune") or {}).get("seconds")
    return float(value) if isinstance(value, (int, float)) else None


def _row(label: str, runs: list[RunRecord], get: Callable[[RunRecord], float | None], digits: int,
         bold_min: bool) -> list[str] | None:
    values = [get(r) for r in runs]
    if all(v is None for v in values):
        return None
    present = [v for v in values if v is not None]
    best = min(present) if bold_min and len(set(present)) > 1 else None
    cells = ["–" if v is None else (f"**{v:.{digits}f}**" if v == best else f"{v:.{digits}f}") for v in values]
    return [label, *cells]


def demo_table(records: Sequence[RunRecord]) -> str:
    """Markdown for the README's "What the demo measured" table(s)."""
    layout = arrange(records)
    probe, task = primary_task(records, ("probe",)), primary_task(records)
    dense = {cell.row[:1] + cell.row[2:]: _one(cell) for cell in layout.cells if cell.row[1] == "dense"}
    rows: dict[tuple[str, ...], dict[str, RunRecord]] = {}
    for cell in layout.cells:
        if cell.row[1] != "dense":
            rows.setdefault(cell.row, {})[cell.column if cell.column != FILL else "–"] = _one(cell)
    if not rows:
        raise ReportError("no compressed runs: the README table compares calibrations of a compressed model")
    tables = []
    for row, by_kind in rows.items():
        kinds = [k for k in layout.columns if k in by_kind] + (["–"] if "–" in by_kind else [])
        runs = [by_kind[k] for k in kinds]
        method = METHODS.get(str((runs[0].recipe.get("prune") or {}).get("method", "sparsegpt")), "")
        reference = dense.get(row[:1] + row[2:])
        dense_nll = (_number(reference, probe, mk.DECODE_NLL) if reference else None)
        dense_nll = dense_nll if dense_nll is not None else _number(runs[0], probe, mk.DENSE_DECODE_NLL)
        title = ", ".join([row[0], " ".join(p for p in (row[1], method) if p), *row[2:]])
        body: list[list[str]] = []
        nll_label = "decode NLL" + (f" (dense: {dense_nll:.3f})" if dense_nll is not None else "")
        for line in (
            _row(nll_label, runs, lambda r: _number(r, probe, mk.DECODE_NLL), 3, True),
            _row("decode-position L2 error of the last hidden state", runs,
                 lambda r: _number(r, probe, mk.DECODE_ERROR), 2, True),
            _row("prompt-position L2 error", runs, lambda r: _number(r, probe, mk.PROMPT_ERROR), 2, True),
            _row(f"mean generated length ({task}, tokens)", runs, lambda r: _number(r, task, mk.MEAN_LENGTH), 1,
                 False),
            _row("prune stage (s)", runs, _prune_seconds, 1, False),
        ):
            if line:
                body.append(line)
        tables.append("\n".join(markdown_table([title, *(COLUMN_NAMES.get(k, k) for k in kinds)], body)))
    return "\n\n".join(tables) + "\n"
