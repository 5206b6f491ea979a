"""All terminal rendering (rich): plan tables, progress bars, summaries, errors.

When stdout is not a terminal, progress becomes plain log lines so CI logs stay readable.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

console = Console()
err_console = Console(stderr=True)
log = logging.getLogger("rac.ui")


def interactive() -> bool:
    return console.is_terminal


class _NoTracebackFormatter(logging.Formatter):
    """Console formatter that leaves tracebacks out: a failing stage is reported as one clear
    ``error:`` line by the CLI, and its traceback goes to the run's ``run.log`` (``-v`` shows it)."""

    def formatException(self, ei: Any) -> str:  # noqa: N802 (logging's name)
        return ""  # empty, so the run.log handler still formats the traceback for itself

    def formatStack(self, stack_info: str) -> str:  # noqa: N802
        return ""


def setup_logging(verbose: bool = False) -> None:
    """Plain log lines on stderr (rich handler on a terminal); tracebacks only with ``verbose``."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger("rac")
    root.setLevel(level)
    if any(getattr(h, "_rac_console", False) for h in root.handlers):
        return
    formatter = logging.Formatter if verbose else _NoTracebackFormatter
    if err_console.is_terminal:
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(console=err_console, show_path=False, markup=False)
        handler.setFormatter(formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    handler._rac_console = True  # type: ignore[attr-defined]
    handler.setLevel(level)
    root.addHandler(handler)


# -- progress ---------------------------------------------------------------------------------------
class _RichHandle:
    def __init__(self, progress: Progress, task_id: Any) -> None:
        self.progress, self.task_id = progress, task_id

    def advance(self, n: int = 1) -> None:
        self.progress.advance(self.task_id, n)

    def close(self) -> None:
        self.progress.remove_task(self.task_id)


class _LogHandle:
    def __init__(self, description: str, total: int | None) -> None:
        self.description, self.total, self.done = description, total, 0
        self.last = 0.0
        self.start = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last > 10 or (self.total and self.done >= self.total):
            self.last = now
            total = f"/{self.total}" if self.total else ""
            log.info("%s: %d%s (%.0fs)", self.description, self.done, total, now - self.start)

    def close(self) -> None:
        pass


class ProgressUI:
    """A ProgressReporter: one rich bar per task on a terminal, periodic log lines otherwise."""

    def __init__(self) -> None:
        self.progress: Progress | None = None

    def __enter__(self) -> ProgressUI:
        if interactive():
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=True)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def task(self, description: str, total: int | None):
        if self.progress is not None:
            return _RichHandle(self.progress, self.progress.add_task(description, total=total))
        return _LogHandle(description, total)


def stage_event(stage: str, state: str, planned: Any) -> None:
    style = {"cached": "green", "running": "yellow", "done": "bold green"}.get(state, "white")
    console.print(f"[{style}]{state:>8}[/] {stage} [dim]{planned.fingerprint[:12]}[/]")


# -- recipes ----------------------------------------------------------------------------------------
def recipe_errors(error: Exception) -> None:
    issues = getattr(error, "issues", None)
    if issues:
        for issue in issues:
            err_console.print(f"error: {issue}", markup=False, highlight=False, soft_wrap=True)
        err_console.print(f"{len(issues)} error(s)", style="red")
    else:
        err_console.print(f"error: {error}", markup=False, highlight=False, soft_wrap=True)


def validated(path: str, ok: bool, detail: str = "") -> None:
    mark = "[green]ok[/]" if ok else "[red]invalid[/]"
    console.print(f"{mark} {path} {detail}", highlight=False)


def show_recipe(recipe: dict, fmt: str = "yaml") -> None:
    import yaml

    text = json.dumps(recipe, indent=2) if fmt == "json" else yaml.safe_dump(recipe, sort_keys=False)
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def recipe_diff(changes: Sequence[Any], invalidated: Sequence[str]) -> None:
    if not changes:
        console.print("no semantic difference")
        return
    table = Table(title="recipe diff")
    table.add_column("key")
    table.add_column("a")
    table.add_column("b")
    for change in changes:
        table.add_row(change.path, _short(change.old), _short(change.new))
    console.print(table)
    console.print("stages invalidated: " + (", ".join(invalidated) if invalidated else "none"))


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


# -- plan and runs ----------------------------------------------------------------------------------
def plan_table(plan: Any, scope_rows: Iterable[tuple[str, str]] | None = None) -> None:
    table = Table(title="plan")
    for column in ("stage", "cache", "fingerprint", "needs", "reads"):
        table.add_column(column)
    for planned in plan:
        cache = "hit" if planned.hit else ("run dir" if not planned.stage.cached else "miss")
        reads = ", ".join(f"{k}" for k in planned.reads)
        table.add_row(planned.name, f"[green]{cache}[/]" if planned.hit else cache, planned.fingerprint[:12],
                      ", ".join(planned.needs) or "-", reads)
    console.print(table)
    if scope_rows:
        scopes = Table(title="prune scopes per block")
        scopes.add_column("block")
        scopes.add_column("modules (scope: method, target)")
        for block, text in scope_rows:
            scopes.add_row(block, text)
        console.print(scopes)


def run_summary(result: Any) -> None:
    table = Table(title=f"run {result.run_dir}")
    for column in ("stage", "status", "seconds", "summary"):
        table.add_column(column)
    for name, record in result.metrics["stages"].items():
        summary = {k: v for k, v in (record.get("summary") or {}).items() if not isinstance(v, (dict, list))}
        table.add_row(name, record["status"], f"{record['seconds']:.1f}", _short(summary, 90))
    console.print(table)
    evaluate = result.metrics.get("evaluate") or {}
    if evaluate:
        metrics = Table(title="evaluation")
        metrics.add_column("task")
        metrics.add_column("metrics")
        for task, values in evaluate.items():
            flat = {k: v for k, v in (values or {}).items() if isinstance(v, (int, float, str))}
            metrics.add_row(task, _short(flat, 110))
        console.print(metrics)


def grid_summary(rows: Sequence[dict], paths: Sequence[Any]) -> None:
    """A few cells: one column per cell (fits a terminal); many cells: one compact row per cell.

    The full table (every override, stage time and metric) is in summary.csv / summary.md.
    """
    if not rows:
        return
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields and k not in ("run_dir", "error", "cell")]
    stage_order = ("rollout_s", "hessian_s", "prune_s", "quantize_s", "evaluate_s", "export_s")

    def rank(field: str) -> tuple[int, int]:
        if field in stage_order:
            return 2, stage_order.index(field)
        if field == "status":
            return 1, 0
        return (3, 0) if "." in field and field.split(".")[0] not in ("prune", "calibration") else (0, 0)

    fields.sort(key=rank)
    table = Table(title="grid summary")
    if len(rows) <= 6:
        table.add_column("", no_wrap=True, min_width=18)
        for row in rows:
            table.add_column(str(row["cell"]))
        for field in fields:
            table.add_row(field, *[_short(row.get(field, ""), 20) for row in rows])
    else:
        metrics = [f for f in fields if "." in f][:3]
        compact = ["cell", "status", "total_s", *metrics]
        for column in compact:
            table.add_column(column)
        for row in rows:
            total = sum(v for k, v in row.items() if k.endswith("_s") and isinstance(v, (int, float)))
            values = {**row, "total_s": f"{total:.0f}"}
            table.add_row(*[_short(values.get(c, ""), 28) for c in compact])
    console.print(table)
    for row in rows:
        if row.get("error"):
            err_console.print(f"cell {row['cell']} failed: {row['error']}", markup=False, highlight=False)
    for path in paths:
        console.print(f"wrote {path}")


def cache_list(infos: Sequence[Any]) -> None:
    table = Table(title="rac cache")
    for column in ("stage", "fingerprint", "size", "valid", "created"):
        table.add_column(column)
    for info in infos:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created))
        table.add_row(info.stage, info.fingerprint, f"{info.size_bytes / 1e6:.1f} MB", str(info.valid), created)
    console.print(table)


def message(text: str) -> None:
    console.print(text, highlight=False)


def verbatim(text: str) -> None:
    """Text printed exactly as given (no markup, no wrapping): markdown meant to be pasted."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def error(text: str) -> None:
    err_console.print(f"error: {text}", markup=False, highlight=False, soft_wrap=True)


def rollout_summary(summary: dict) -> None:
    stats = Table(title="rollouts")
    stats.add_column("statistic")
    stats.add_column("value")
    for key, value in summary.items():
        if key == "provenance" and isinstance(value, dict):
            for sub in ("engine", "engine_version", "model_identity", "on_policy", "sampling"):
                if sub in value:
                    stats.add_row(f"provenance.{sub}", _short(value[sub], 100))
        elif key != "samples" and not isinstance(value, list):
            stats.add_row(key, _short(value, 100))
    console.print(stats)
    for sample in summary.get("samples", []):
        header = ", ".join(f"{k}={sample[k]}" for k in ("prompt_index", "sample", "finish_reason", "completion_len")
                           if k in sample)
        console.rule(header)
        if sample.get("problem"):
            console.print(f"[bold]problem:[/] {_short(sample['problem'], 300)}", highlight=False)
        console.print(sample.get("text", ""), markup=False, highlight=False)


def report_table(table: Any) -> None:
    """Render a rac.report ReportTable (rows, columns, cells, best flags).

    Wide tables (``table.metrics`` x ``table.kinds`` after ``table.lead`` label columns) are pivoted
    so they fit a terminal: one line per (row, metric), one column per calibration; the markdown/CSV
    keep the wide form.
    """
    best = getattr(table, "best", None) or [[False] * len(table.columns) for _ in table.rows]
    fmt = lambda cell, flag: f"[bold green]{cell}[/]" if flag else str(cell)
    lead, kinds, metrics = getattr(table, "lead", 0), getattr(table, "kinds", []), getattr(table, "metrics", [])
    if not kinds or not metrics or len(table.columns) <= 5:
        rich_table = Table(title=getattr(table, "title", "report"))
        for column in table.columns:
            rich_table.add_column(str(column))
        for row, flags in zip(table.rows, best):
            rich_table.add_row(*[fmt(cell, flag) for cell, flag in zip(row, flags)])
        console.print(rich_table)
    else:
        rich_table = Table(title=getattr(table, "title", "report"))
        for column in [*table.columns[:lead], "metric", *kinds]:
            rich_table.add_column(str(column))
        for row, flags in zip(table.rows, best):
            cells = list(zip(row, flags))
            for index, metric in enumerate(metrics):
                labels = [str(c) for c in row[:lead]] if index == 0 else [""] * lead
                start = lead + index * len(kinds)
                values = [fmt(*cells[start + k]) for k in range(len(kinds))]
                rich_table.add_row(*labels, metric, *values, end_section=index == len(metrics) - 1)
        console.print(rich_table)
    for note in getattr(table, "notes", []):
        console.print(note, style="dim", highlight=False)
