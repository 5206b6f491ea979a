"""The paper's Table 4: 2:4 MLP sparsity by scope (first third / first+last third / all blocks), as RAC,
Prompt+FP8 and RAC+FP8, with accuracy, generated tokens and throughput against the dense model.

Rows: the dense baseline first, then scope x calibration (+FP8) in the paper's order. Columns: accuracy
± SE and mean generated tokens of the generation task, then per throughput task (one per batch shape /
backend): prefill and decode tokens/s (``backend: torch``) or generation tokens/s (``backend: vllm``),
the speed-up over the dense model measured in the same task, and the kernel that actually ran (a
fallback is named). Best accuracy and best throughput of each column in bold.
"""

from __future__ import annotations

from collections.abc import Sequence

from rac.report import metric_keys as mk
from rac.report.labels import prune_label
from rac.report.paper_cells import (
    MISSING,
    best_flags,
    calibration_column,
    is_dense,
    measure,
    model_order,
    place,
    short_model,
    task_value,
)
from rac.report.report_table import ReportTable
from rac.report.runs import ReportError, RunRecord, primary_task

DENSE = ("Dense baseline", "—")
SCOPE_ORDER = ("first third", "first+last third", "all blocks")


def _scope_rank(scope: str) -> int:
    return next((i for i, word in enumerate(SCOPE_ORDER) if scope.endswith(word)), len(SCOPE_ORDER))


def _variant(record: RunRecord) -> str:
    calibration = calibration_column(record.recipe)
    return f"{calibration}+FP8" if record.recipe.get("quantize") else calibration


def _throughput_tasks(records: Sequence[RunRecord]) -> list[tuple[str, str]]:
    """(task, backend) of every throughput task any run measured, in first-seen order."""
    tasks: dict[str, str] = {}
    for record in records:
        for name, metrics in record.evaluate.items():
            if isinstance(metrics, dict) and metrics.get("type") == "throughput" and metrics.get("status") == "ok":
                tasks.setdefault(name, str(metrics.get("backend") or "torch"))
    return list(tasks.items())


def _phase(task: str, phase: str, dense_row: bool):
    variant = "dense" if dense_row else "compressed"
    return task_value(task, "variants", variant, f"{phase}_tokens_per_s")


def _speedup_text(runs: list[RunRecord] | None, task: str, phases: tuple[str, ...], dense_row: bool) -> str:
    if not runs:
        return MISSING
    if dense_row:
        return " / ".join("1.00×" for _ in phases) if task in runs[0].evaluate else MISSING
    values = [task_value(task, "speedup", p)(runs[0]) for p in phases]
    return " / ".join(MISSING if v is None else f"{v:.2f}×" for v in values)


def _kernel_text(runs: list[RunRecord] | None, task: str, dense_row: bool) -> str:
    metrics = (runs[0].evaluate.get(task) or {}) if runs else {}
    variant = (metrics.get("variants") or {}).get("dense" if dense_row else "compressed") or {}
    if not variant:
        return MISSING
    kernel = "dense GEMMs" if dense_row or variant.get("kernel") in (None, "none") else str(variant["kernel"])
    if variant.get("fallback_from"):
        kernel += f" (fallback from {variant['fallback_from']})"
    return f"{metrics.get('backend') or 'torch'}: {kernel}"


def table4(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> ReportTable:
    """Rows dense baseline + scope x (RAC, Prompt+FP8, RAC+FP8); accuracy, tokens, throughput and speed-ups."""
    task = primary_task(records, ("math", "code"))
    throughput = _throughput_tasks(records)
    if task is None and not throughput:
        raise ReportError("Table 4: no run has a finished math/code or throughput task")

    def key(record: RunRecord) -> tuple | str:
        if is_dense(record):
            return (short_model(record.recipe), *DENSE)
        if not record.recipe.get("prune"):
            return "quantized only: Table 4 rows are 2:4-pruned"
        return (short_model(record.recipe), prune_label(record.recipe["prune"]), _variant(record))

    cells, notes = place(records, key, "Table 4", aggregate)
    models = sorted({k[0] for k in cells}, key=model_order)
    rows = sorted(cells, key=lambda k: (model_order(k[0]), k[1:] != DENSE, _scope_rank(k[1]), k[1],
                                        "FP8" in k[2], k[2] != "Prompt+FP8", k[2]))
    lead = (["Model"] if len(models) > 1 else []) + ["Scope", "Calibration"]
    columns, metrics = list(lead), []
    if task:
        columns += ["Accuracy ± SE", "Tokens"]
        metrics += ["Accuracy ± SE", "Tokens"]
    for name, backend in throughput:
        phases = ("generation",) if backend == "vllm" else ("prefill", "decode")
        heads = ["gen tok/s"] if backend == "vllm" else ["prefill tok/s", "decode tok/s"]
        heads += ["speed-up vs dense" + ("" if backend == "vllm" else " (prefill / decode)"), "kernel"]
        columns += [f"{h} [{name}]" for h in heads]
        metrics += [f"{h} [{name}]" for h in heads]
    table = ReportTable(title=f"Table 4: 2:4 MLP sparsity ({', '.join(models)}): accuracy, tokens and throughput",
                        columns=columns, lead=len(lead), metrics=metrics)
    grid: list[list[tuple[float | None, str, str | None]]] = []
    for row in rows:
        runs, dense_row = cells[row], row[1:] == DENSE
        out: list[tuple[float | None, str, str | None]] = []
        if task:
            out.append((*measure(runs, task_value(task, mk.ACCURACY), 3, task_value(task, mk.ACCURACY_SE)), "max"))
            out.append((*measure(runs, task_value(task, mk.MEAN_LENGTH), 0), None))
        for name, backend in throughput:
            phases = ("generation",) if backend == "vllm" else ("prefill", "decode")
            out += [(*measure(runs, _phase(name, p, dense_row), 0), "max") for p in phases]
            out += [(None, _speedup_text(runs, name, phases, dense_row), None), (None, _kernel_text(runs, name, dense_row), None)]
        grid.append(out)
    flags = [best_flags([grid[r][c][0] for r in range(len(rows))], grid[0][c][2]) for c in range(len(grid[0]))] \
        if grid else []
    for r, row in enumerate(rows):
        table.rows.append(([row[0]] if len(models) > 1 else []) + list(row[1:]) + [text for _, text, _ in grid[r]])
        table.best.append([False] * len(lead) + [flags[c][r] for c in range(len(grid[r]))])
    for row in rows:
        for name, _ in throughput:
            note = (((cells[row][0].evaluate.get(name) or {}).get("variants") or {}).get("compressed") or {}).get("note")
            if note:
                table.notes.append(f"{' / '.join(row[1:])} [{name}]: {note}")
    table.notes.append("speed-ups are measured against the dense model inside each throughput task (same device, "
                       "same shapes); best accuracy / throughput in bold")
    table.notes += notes + [f"{r.path}: {r.failure}" for runs in cells.values() for r in runs if r.failure]
    return table
