"""Paper-style tables from run directories: one row per experiment setting, one column per calibration.

Which run goes where is decided by ``rac.report.cells`` (never two runs in one cell; ``aggregate``
averages runs that differ only in the given keys, e.g. seeds, as mean ± SE over them). Cells are
strings (the terminal rendering in ``rac.ui`` and the markdown/CSV writers share them); ``best``
flags the best cell of each metric group per row (highest accuracy / throughput, lowest run time /
NLL / error). A run whose later stage failed shows what it measured plus a status cell naming the
failure.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rac.pipeline.cache import Cache
from rac.report import metric_keys as mk
from rac.report.cells import FILL, Cell, arrange
from rac.report.report_table import ReportTable, to_csv, to_markdown
from rac.report.runs import ReportError, RunRecord, collect_runs, load_run, primary_task

__all__ = ["KIND_ORDER", "ReportError", "ReportTable", "RunRecord", "collect_runs", "load_run", "primary_task",
           "table_one", "to_csv", "to_markdown", "write_report"]

KIND_ORDER = ("C4", "text", "prompt", "RAC")


def _get(task: str | None, *path: str) -> Callable[[dict], float | None]:
    def getter(evaluate: dict) -> float | None:
        value: Any = evaluate.get(task) if task else None
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return getter


def _minutes(task: str | None) -> Callable[[dict], float | None]:
    seconds, wall = _get(task, mk.SECONDS), _get(task, mk.WALL_SECONDS)

    def getter(evaluate: dict) -> float | None:
        value = seconds(evaluate)
        value = wall(evaluate) if value is None else value
        return None if value is None else value / 60
    return getter


def _decode_tokens_per_s(task: str | None) -> Callable[[dict], float | None]:
    """The throughput task's decode tokens/s of the compressed model (of the dense one for a dense run)."""
    compressed, dense = _get(task, "variants", "compressed", "decode_tokens_per_s"), \
        _get(task, "variants", "dense", "decode_tokens_per_s")

    def getter(evaluate: dict) -> float | None:
        value = compressed(evaluate)
        return dense(evaluate) if value is None else value
    return getter


# (column label, value getter, per-run SE getter or None, digits, best = "max" | "min" | None)
Group = tuple[str, Callable[[dict], float | None], Callable[[dict], float | None] | None, int, str | None]


def _groups(task: str | None, probe: str | None, throughput: str | None) -> list[Group]:
    return [
        ("acc", _get(task, mk.ACCURACY), _get(task, mk.ACCURACY_SE), 3, "max"),
        ("min", _minutes(task), None, 1, "min"),
        ("len", _get(task, mk.MEAN_LENGTH), None, 0, None),
        ("len/dense", _get(task, mk.LENGTH, mk.LENGTH_RATIO), None, 2, None),
        ("budget hit", _get(task, mk.LENGTH, mk.BUDGET_HIT_RATE), None, 2, None),
        ("tok/s", _decode_tokens_per_s(throughput), None, 0, "max"),
        ("dec NLL", _get(probe, mk.DECODE_NLL), None, 3, "min"),
        ("dec err", _get(probe, mk.DECODE_ERROR), None, 3, "min"),
        ("prm err", _get(probe, mk.PROMPT_ERROR), None, 3, "min"),
    ]


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def _cell_value(cell: Cell, group: Group) -> tuple[float | None, str]:
    """(value for best-marking, text): one run as measured; several (aggregated) as mean ± SE (n=...)."""
    _label, getter, se_getter, digits, _goal = group
    values = [v for v in (getter(r.evaluate) for r in cell.runs) if v is not None]
    if not values:
        return None, "–"
    if len(cell.runs) > 1:
        if len(values) == 1:
            return values[0], f"{values[0]:.{digits}f} (n=1 of {len(cell.runs)})"
        mean, se = _mean_se(values)
        return mean, f"{mean:.{digits}f} ± {se:.{digits}f} (n={len(values)})"
    one_se = se_getter(cell.runs[0].evaluate) if se_getter else None
    return values[0], f"{values[0]:.{digits}f}" + (f" ± {one_se:.{digits}f}" if one_se is not None else "")


def _status(cell: Cell) -> str:
    failures = [r.failure for r in cell.runs if r.failure]
    return "; ".join(f.split(":", 1)[0] for f in failures) if failures else "ok"


def table_one(records: Sequence[RunRecord], task: str | None = None, aggregate: Sequence[str] = ()) -> ReportTable:
    """Table 1 (and Tables 3-5): every distinct run its own cell; rows = settings, columns = calibration."""
    from rac.report.length import annotate_length_ratios

    layout = arrange(records, aggregate)
    task = task or primary_task(records)
    if task:
        annotate_length_ratios(records, task)  # length relative to the dense run, when both keep their records
    probe = primary_task(records, ("probe",))
    throughput = primary_task(records, ("throughput",))
    groups = [g for g in _groups(task, probe, throughput) if any(g[1](r.evaluate) is not None for r in records)]
    failed = [r for r in records if r.failure]
    metric_names = (["status"] if failed else []) + [g[0] for g in groups]
    kinds = layout.columns
    title = f"{task or 'no benchmark'}: accuracy ± SE, run time (min)"
    table = ReportTable(title=title, columns=layout.lead + [f"{m} ({k})" for m in metric_names for k in kinds],
                        lead=len(layout.lead), kinds=kinds, metrics=metric_names)
    rows: dict[tuple[str, ...], dict[str, Cell]] = {}
    for cell in layout.cells:
        rows.setdefault(cell.row, {})[cell.column] = cell
    for row, by_kind in rows.items():
        if FILL in by_kind:  # a calibration-free baseline alone in its row fills every column
            by_kind = {k: by_kind[FILL] for k in kinds}
        cells, best = list(row), [False] * len(row)
        if failed:
            cells += [_status(by_kind[k]) if k in by_kind else "–" for k in kinds]
            best += [False] * len(kinds)
        for group in groups:
            measured = [_cell_value(by_kind[k], group) if k in by_kind else (None, "–") for k in kinds]
            present = [v for v, _ in measured if v is not None]
            goal = group[4]
            target = (max(present) if goal == "max" else min(present)) if goal and len(set(present)) > 1 else None
            cells += [text for _, text in measured]
            best += [target is not None and value == target for value, _ in measured]
        table.rows.append(cells)
        table.best.append(best)
    if probe:
        table.notes.append(f"probe columns from task {probe!r}: decode NLL, mean L2 error on decode/prompt tokens")
    if layout.aggregated:
        table.notes.append(f"cells with n=... are mean ± SE over runs differing only in {', '.join(layout.aggregated)}")
    table.notes += [f"{r.path}: {r.failure}" for r in failed]
    return table


def write_report(path: Path | str, out_dir: Path | str, aggregate: Sequence[str] = (),
                 cache: Cache | None = None) -> list[Path]:
    """table.md, table.csv and the PNG plots for the runs under ``path`` (artifacts looked up in
    ``cache``, default ``$RAC_CACHE`` or ``~/.cache/rac``); returns the files written."""
    from rac.report.plots import write_plots

    records = collect_runs(path, cache)
    table = table_one(records, aggregate=aggregate)  # raises before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(to_markdown(table))
    (out / "table.csv").write_text(to_csv(table))
    return [out / "table.md", out / "table.csv", *write_plots(records, out, tuple(aggregate))]
