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
from rich.text import Text

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
    for old in [h for h in root.handlers if getattr(h, "_rac_console", False)]:  # each call decides afresh
        root.removeHandler(old)
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
    console.print(f"{mark} {path} {detail}".rstrip(), highlight=False, soft_wrap=True)


def show_recipe(recipe: dict, fmt: str = "yaml") -> None:
    import yaml

    text = json.dumps(recipe, indent=2) if fmt == "json" else yaml.safe_dump(recipe, sort_keys=False)
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def show_recipe_origins(recipe: dict, origins: dict[str, str], fmt: str = "yaml") -> None:
    """The resolved recipe with each value's origin: a ``# file:line`` comment (YAML) or a flat JSON map."""
    if fmt == "json":
        import rac.recipe.source as source

        flat = {path: {"value": _value_at(recipe, source.split_path(path)), "origin": origin}
                for path, origin in origins.items()}
        console.print(json.dumps(flat, indent=2, default=str), markup=False, highlight=False, soft_wrap=True)
        return
    lines: list[str] = []
    _origin_lines(recipe, "", 0, origins, lines, False)
    width = max((len(line.split("\0")[0]) for line in lines), default=0)
    for line in lines:
        text, _, origin = line.partition("\0")
        console.print(f"{text.ljust(width)}  # {origin}" if origin else text, markup=False, highlight=False,
                      soft_wrap=True)


def _value_at(data: Any, tokens: list) -> Any:
    for tok in tokens:
        data = data[tok]
    return data


def _scalar(value: Any) -> str:
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10**9).strip()
    return text[:-4].strip() if text.endswith("\n...") or text.endswith("...") and "\n" in text else text


def _origin_lines(value: Any, path: str, indent: int, origins: dict[str, str], lines: list[str],
                  in_item: bool) -> None:
    pad = " " * indent
    for i, (key, sub) in enumerate(value.items()):
        here = f"{path}.{key}" if path else str(key)
        lead = pad if not (in_item and i == 0) else ""
        if isinstance(sub, dict) and sub:
            lines.append(f"{lead}{key}:")
            _origin_lines(sub, here, indent + 2, origins, lines, False)
        elif isinstance(sub, list) and sub and any(isinstance(v, (dict, list)) for v in sub):
            lines.append(f"{lead}{key}:")
            for j, item in enumerate(sub):
                if isinstance(item, dict) and item:
                    lines.append(f"{pad}  - \0")  # placeholder, merged with the item's first key below
                    start = len(lines)
                    _origin_lines(item, f"{here}[{j}]", indent + 4, origins, lines, True)
                    first = lines.pop(start)
                    lines[start - 1] = f"{pad}  - {first}"
                else:
                    lines.append(f"{pad}  - {_scalar(item)}\0{origins.get(f'{here}[{j}]', '')}")
        else:
            lines.append(f"{lead}{key}: {_scalar(sub)}\0{origins.get(here, '')}")


def review(entries: Sequence[Any], errors: Sequence[str] = (), notes: Sequence[str] = ()) -> None:
    """``rac diff``: per compared pair its changes, invalidated stages and re-run cost, values in full.

    A terminal gets tables that wrap (never cut) long values; CI logs get plain ``key: old → new`` lines.
    """
    from rac.report.review import cost_text, value_text

    for text in errors:
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)
    if not entries:
        console.print("no semantic difference")
    for entry in entries:
        status = "" if entry.status == "changed" else f", {entry.status}"
        _line(f"diff {entry.title} ({entry.kind}{status})")
        _change_rows(entry.changes, value_text)
        for cell in entry.cells:
            reuse = f", reusing {cell.nearest}" if cell.nearest and cell.nearest != cell.name else ""
            stages = f"; re-run: {', '.join(cell.rerun) or 'none'}{reuse} ({cost_text(cell.cost)})" \
                if cell.status != "removed" else ""
            _line(f"  cell {cell.name}: {cell.status}{stages}")
            _change_rows(cell.changes, value_text, indent="    ")
        if entry.cells or entry.unchanged_cells:
            _line(f"  {entry.unchanged_cells} cell(s) unchanged")
        if entry.invalidated or entry.rerun:
            _line("stages invalidated: " + (", ".join(entry.invalidated) or "none"))
            _line(f"re-run: {', '.join(entry.rerun) or 'none'} ({cost_text(entry.cost)})")
        elif entry.cells:
            _line(f"cells to run: {cost_text(entry.cost)}")
    for note in notes:
        _line(f"note: {note}")


def _change_rows(changes: Sequence[Any], value_text: Any, indent: str = "  ") -> None:
    if not changes:
        return
    if not console.is_terminal:
        for change in changes:
            _line(f"{indent}{change.path}: {value_text(change.old)} → {value_text(change.new)}")
        return
    table = Table(show_edge=False, pad_edge=False)
    for column in ("key", "old", "new"):
        table.add_column(column, overflow="fold")
    for change in changes:  # Text: `[name]` in a path is not markup
        table.add_row(Text(change.path), Text(value_text(change.old)), Text(value_text(change.new)))
    console.print(table, highlight=False)


def _line(text: str) -> None:
    """One line of output, never wrapped or cut (values in CI logs stay whole), no markup."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def markdown(text: str) -> None:
    """Raw markdown (a PR comment) on stdout, unwrapped."""
    sys.stdout.write(text)
    sys.stdout.flush()


def _short(value: Any, width: int = 60) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else value
    return text if len(text) <= width else text[: width - 1] + "…"


def key_table(keys: Sequence[Any]) -> None:
    """``rac keys``: one block per key (never truncated): path, type, default, range, description."""
    for info in keys:
        bits = [info.type]
        if info.default:
            bits.append(f"default {info.default}")
        if info.range:
            bits.append(info.range)
        console.print(f"{info.path}  ({'; '.join(bits)})", markup=False, highlight=False, soft_wrap=True)
        if info.description:
            console.print(f"    {info.description}", markup=False, highlight=False, soft_wrap=True)


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
    plan_notes(plan)
    if scope_rows:
        scopes = Table(title="prune scopes per block")
        scopes.add_column("block")
        scopes.add_column("modules (scope: method, target)")
        for block, text in scope_rows:
            scopes.add_row(block, text)
        console.print(scopes)


def miss_lines(planned: Any, limit: int = 6) -> list[str]:
    """Why a planned stage misses the cache: its inputs that differ from its newest cached entry."""
    why = getattr(planned, "why", None)
    if why is None:
        return []
    if not why:
        return ["no earlier cached entry of this stage"]
    upstream = [c.key.split(".", 1)[1] for c in why if c.key.startswith("upstream.")]
    lines = [f"{c.key}: {_short(c.old, 40)} -> {_short(c.new, 40)}" for c in why if not c.key.startswith("upstream.")]
    if upstream:
        lines.append("upstream stage changed: " + ", ".join(upstream))
    return lines[:limit] + ([f"... and {len(lines) - limit} more"] if len(lines) > limit else [])


def plan_notes(plan: Any) -> None:
    """Warnings about the plan's fingerprints and, for each cache miss, which input changed."""
    for warning in getattr(plan, "warnings", []) or []:
        console.print(f"[yellow]warning[/] {warning}")
    for planned in plan:
        lines = miss_lines(planned) if getattr(planned, "why", None) else []  # first runs need no reason
        if lines:
            console.print(f"[bold]{planned.name}[/] misses: " + "; ".join(lines))


def plan_preview(preview: Any) -> None:
    """``rac plan``: notes (what is not resolvable here), model facts, stages, estimates, scopes."""
    from rac.workflow.estimate import fmt_bytes, fmt_count

    for note in preview.notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    facts = preview.facts
    if facts is not None:
        source = "rac's table of known configs" if facts.from_table else facts.source
        console.print(f"model: {facts.model_id}: {facts.architecture}, {facts.n_blocks} blocks, "
                      f"{facts.params / 1e9:.2f}B parameters (from {source})",
                      markup=False, highlight=False, soft_wrap=True)
    table = Table(title="plan")
    for column in ("stage", "cache", "fingerprint", "needs", "reads"):
        table.add_column(column, overflow="fold")
    for planned in preview.plan:
        if not preview.identity_known and planned.stage.cached:
            cache, fingerprint = "?", "?"
        else:
            cache = "hit" if planned.hit else ("run dir" if not planned.stage.cached else "miss")
            fingerprint = planned.fingerprint[:12]
        table.add_row(planned.name, f"[green]{cache}[/]" if planned.hit else cache, fingerprint,
                      ", ".join(planned.needs) or "-", ", ".join(planned.reads))
    console.print(table)
    estimates = Table(title="estimate (upper bounds)")
    for column in ("stage", "accelerator peak", "host memory", "disk", "tokens to generate"):
        estimates.add_column(column, overflow="fold")
    for item in preview.estimates:
        disk = fmt_bytes(item.disk) if item.disk else ("-" if item.disk == 0 else "?")
        host = fmt_bytes(item.host_memory) if item.host_memory else "-"
        memory = fmt_bytes(item.memory) if item.memory else ("-" if item.memory == 0 else "?")
        estimates.add_row(item.stage, memory, host, disk,
                          fmt_count(item.tokens) if item.tokens is not None else "-")
    peak = max((e.memory for e in preview.estimates if e.memory is not None), default=None)
    disk_total = sum(e.disk or 0 for e in preview.estimates if e.stage != "export")
    tokens = sum(e.tokens or 0 for e in preview.estimates)
    estimates.add_row("total", fmt_bytes(peak) + " (max)" if peak is not None else "?", "",
                      fmt_bytes(disk_total) + " cache", fmt_count(tokens), end_section=False)
    console.print(estimates)
    for item in preview.estimates:
        for note in item.notes:
            console.print(f"  {item.stage}: {note}", markup=False, highlight=False, soft_wrap=True)
    for warning in getattr(preview, "warnings", []):
        err_console.print(f"warning: {warning}", markup=False, highlight=False, soft_wrap=True)
    if preview.scope_rows:
        scopes = Table(title="prune scopes per block")
        scopes.add_column("block")
        scopes.add_column("modules (scope: method, target)", overflow="fold")
        for block, text in preview.scope_rows:
            scopes.add_row(block, text)
        console.print(scopes)
    if preview.identity_known:
        plan_notes(preview.plan)


def grid_preview(preview: Any) -> None:
    """``rac grid --dry-run``: each cell, what it changes in the base recipe, and its cache state."""
    cells, notes = preview
    for note in notes:
        err_console.print(f"note: {note}", markup=False, highlight=False, soft_wrap=True)
    console.print(f"{len(cells)} cells, all valid", highlight=False)
    for cell in cells:
        console.print(f"  {cell.name}: {' '.join(cell.overrides) or '(base)'}", markup=False, highlight=False,
                      soft_wrap=True)
        for change in cell.changes:
            console.print(f"      {change.path}: {_full(change.old)} -> {_full(change.new)}", markup=False,
                          highlight=False, soft_wrap=True)
        if cell.hits is None:
            state = "unknown here (model not resolvable)"
        else:
            state = ", ".join(f"{stage} {hit}" for stage, hit in cell.hits.items())
        console.print(f"      cache: {state}", markup=False, highlight=False, soft_wrap=True)


def _full(value: Any) -> str:
    """A value in full on one line (JSON for containers, ``<absent>`` for a missing key)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, bool, int, float)) or value is None:
        return json.dumps(value, default=str)
    return str(value)


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


GRID_STATE_STYLE = {"done": "green", "cached": "green", "failed": "red", "interrupted": "red",
                    "running": "yellow", "partial": "yellow"}


def grid_status(states: Sequence[Any]) -> None:
    """``rac grid --status``: one row per cell, its state and each stage's, from the run directories."""
    table = Table(title="grid status")
    for column in ("cell", "state", "stages", "run directory"):
        table.add_column(column)

    def styled(state: str) -> str:
        style = GRID_STATE_STYLE.get(state)
        return f"[{style}]{state}[/{style}]" if style else state

    for cell in states:
        stages = " ".join(f"{name}:{styled(state)}" for name, state in cell.stages)
        table.add_row(str(cell.name), styled(cell.state), stages, str(cell.run_dir))
    console.print(table)
    counts: dict[str, int] = {}
    for cell in states:
        counts[cell.state] = counts.get(cell.state, 0) + 1
    console.print(", ".join(f"{n} {state}" for state, n in sorted(counts.items())), highlight=False)


def cache_list(infos: Sequence[Any]) -> None:
    table = Table(title="rac cache")
    for column in ("stage", "kind", "fingerprint", "size", "state", "created", "last used"):
        table.add_column(column)
    for info in infos:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.created))
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(info.last_used)) if info.last_used else "-"
        state = ("writing" if info.held else "stale (rac cache gc removes it)") if info.kind == "partial" \
            else ("ok" if info.valid else "invalid")
        table.add_row(info.stage, info.kind, info.fingerprint, f"{info.size_bytes / 1e6:.1f} MB", state, created,
                      used)
    console.print(table)


def message(text: str) -> None:
    console.print(text, highlight=False)


def warning(text: str) -> None:
    err_console.print(f"warning: {text}", markup=False, highlight=False, soft_wrap=True)


def verbatim(text: str) -> None:
    """Text printed exactly as given (no markup, no wrapping): markdown meant to be pasted."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def error(text: str) -> None:
    err_console.print(f"error: {text}", markup=False, highlight=False, soft_wrap=True)


def internal_error(exc: BaseException, verbose: bool = False) -> None:
    """An unexpected exception (a bug in rac, not a user error): its traceback goes to a crash log
    (and to stderr with ``-v``); the console gets one line naming the exception and the log."""
    import os
    import tempfile
    import traceback

    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    fd, crash = tempfile.mkstemp(prefix="rac-crash-", suffix=".log")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    log.debug("unexpected error", exc_info=exc)
    if verbose:
        err_console.print(text, markup=False, highlight=False, soft_wrap=True)
    error(f"internal error {type(exc).__name__}: {exc} -- a bug in rac, please report it; "
          f"traceback in {crash}" + ("" if verbose else " (-v prints it)"))


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
