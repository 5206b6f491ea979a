"""The paper's Tables 1, 2, 3 and 5 from run directories, in the paper's own layout.

- Table 1 (MATH-500) and Table 2 (LiveCodeBench): rows model x sparsity, the dense row first per model
  (its numbers repeated in every column, as in the paper); columns accuracy ± SE for C4 / Prompt / RAC,
  then run time (min) for the same; the best accuracy and the fastest run time of each row in bold.
- Table 3: rows model x sparsity; columns RAC on-policy and RAC off-policy (the rollout model named).
- Table 5: rows dense / pruned per model; columns accuracy and run time at each evaluation budget
  (largest first); the best of each column in bold.
"""

from __future__ import annotations

from collections.abc import Sequence

from rac.report import metric_keys as mk
from rac.report.labels import budget_label, compression_label, compression_value, uses_calibration
from rac.report.paper_cells import (
    NOT_RUN,
    best_flags,
    calibration_column,
    is_dense,
    measure,
    model_order,
    place,
    short_model,
    task_minutes,
    task_value,
    unstructured,
)
from rac.report.report_table import ReportTable
from rac.report.runs import ReportError, RunRecord, primary_task

DENSE_ROW = "Dense"
PAPER_COLUMNS = ("C4", "Prompt", "RAC")


def _task(records: Sequence[RunRecord], types: tuple[str, ...], layout: str) -> str:
    task = primary_task(records, types)
    if task is None:
        raise ReportError(f"{layout}: no run has a finished {' or '.join(types)} evaluation task "
                          f"(runs: {', '.join(str(r.path) for r in records[:4])}{', ...' if len(records) > 4 else ''})")
    return task


def calibration_table(records: Sequence[RunRecord], layout: str, types: tuple[str, ...], title: str,
                      aggregate: Sequence[str] = ()) -> ReportTable:
    """Tables 1 and 2: rows model x sparsity (dense first), columns accuracy ± SE and run time per calibration."""
    task = _task(records, types, layout)

    def key(record: RunRecord) -> tuple | str:
        if task not in record.evaluate and not record.failure:
            return f"no {task} task"
        if is_dense(record):
            return (short_model(record.recipe), DENSE_ROW, "*")
        if not unstructured(record):
            return f"{compression_label(record.recipe)} is not unstructured sparsity"
        return (short_model(record.recipe), compression_label(record.recipe), calibration_column(record.recipe))

    cells, notes = place(records, key, layout, aggregate)
    columns = list(PAPER_COLUMNS) + sorted({k[2] for k in cells if k[2] not in PAPER_COLUMNS + ("*",)})
    sparsities = sorted({(compression_value(runs[0].recipe), k[1]) for k, runs in cells.items() if k[1] != DENSE_ROW})
    models = sorted({k[0] for k in cells}, key=model_order)
    table = ReportTable(title=title, columns=["Model", "Sparsity"] + [f"Accuracy ± SE ({c})" for c in columns]
                        + [f"Runtime min ({c})" for c in columns], lead=2, kinds=columns,
                        metrics=["accuracy ± SE", "runtime (min)"])
    accuracy, se, minutes = task_value(task, mk.ACCURACY), task_value(task, mk.ACCURACY_SE), task_minutes(task)
    for model in models:
        for sparsity in [DENSE_ROW] + [label for _, label in sparsities]:
            dense = cells.get((model, DENSE_ROW, "*")) if sparsity == DENSE_ROW else None
            slots = [dense or cells.get((model, sparsity, c)) for c in columns]
            acc = [measure(s, accuracy, 3, se) for s in slots]
            time = [measure(s, minutes, 1) for s in slots]
            table.rows.append([model, sparsity] + [t for _, t in acc] + [t for _, t in time])
            table.best.append([False, False] + best_flags([v for v, _ in acc], "max")
                              + best_flags([v for v, _ in time], "min"))
    samples = {int(s) for runs in cells.values() for r in runs if (s := task_value(task, mk.SAMPLES)(r)) is not None}
    table.notes.append(f"task {task!r}; samples per problem: {', '.join(map(str, sorted(samples))) or '?'}; "
                       "runtime = the evaluate stage's wall time for the task; best accuracy / fastest runtime in bold")
    table.notes += notes + [f"{r.path}: {r.failure}" for runs in cells.values() for r in runs if r.failure]
    return table


def table1(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> ReportTable:
    return calibration_table(records, "Table 1", ("math",), "Table 1: MATH-500 acc@1:1 ± SE and total evaluation "
                             "time (min) under one-shot pruning", aggregate)


def table2(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> ReportTable:
    return calibration_table(records, "Table 2", ("code",), "Table 2: LiveCodeBench codegen pass@1 (over 16 samples) "
                             "± SE and total evaluation time (min) under one-shot pruning", aggregate)


def table3(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> ReportTable:
    """Rows model x sparsity; columns RAC on-policy / RAC off-policy (<rollout model>): accuracy ± SE."""
    task = _task(records, ("math", "code"), "Table 3")

    def key(record: RunRecord) -> tuple | str:
        calib = record.recipe.get("calibration") or {}
        if not uses_calibration(record.recipe) or calib.get("kind", "rac") != "rac":
            return "not RAC-calibrated"
        return (short_model(record.recipe), compression_value(record.recipe), compression_label(record.recipe),
                calibration_column(record.recipe, contrast_policy=True))

    cells, notes = place(records, key, "Table 3", aggregate)
    off = sorted({k[3] for k in cells if k[3] != "RAC on-policy"})
    columns = ["RAC on-policy"] + off
    names = ["On-policy"] + [c.replace("RAC off-policy (", "Off-policy (").replace(")", " traces)") for c in off]
    table = ReportTable(title="Table 3: on-policy vs off-policy RAC calibration, acc@1:1 ± SE",
                        columns=["Model", "Sparsity"] + names, lead=2, kinds=names, metrics=["accuracy ± SE"])
    accuracy, se = task_value(task, mk.ACCURACY), task_value(task, mk.ACCURACY_SE)
    for model, value, label in sorted({k[:3] for k in cells}, key=lambda k: (model_order(k[0]), k[1], k[2])):
        acc = [measure(cells.get((model, value, label, c)), accuracy, 3, se) for c in columns]
        table.rows.append([model, label] + [t for _, t in acc])
        table.best.append([False, False] + best_flags([v for v, _ in acc], "max"))
    table.notes += [f"task {task!r}"] + notes
    return table


def table5(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> ReportTable:
    """Rows dense / pruned per model; columns accuracy and run time per evaluation budget (largest first)."""
    task = _task(records, ("math", "code"), "Table 5")

    def budget(record: RunRecord) -> int | None:
        value = (record.recipe.get("evaluate") or {}).get("max_new_tokens")
        return int(value) if isinstance(value, int) else None

    def key(record: RunRecord) -> tuple | str:
        if budget(record) is None:
            return "no evaluate.max_new_tokens"
        setting = DENSE_ROW if is_dense(record) else \
            f"{calibration_column(record.recipe)} {compression_label(record.recipe)}".strip()
        return (short_model(record.recipe), setting, budget(record))

    cells, notes = place(records, key, "Table 5", aggregate)
    budgets = sorted({k[2] for k in cells}, reverse=True)
    rows = sorted({k[:2] for k in cells}, key=lambda k: (model_order(k[0]), k[1] != DENSE_ROW, k[1]))
    heads = [budget_label(b) for b in budgets]
    table = ReportTable(title="Table 5: accuracy and run time (min) at each test-time generation budget",
                        columns=["Model", "Setting"] + [f"{m} ({h})" for h in heads for m in ("Acc.", "Time min")],
                        lead=2)  # budget-major columns: the terminal shows them wide, not pivoted
    accuracy, se, minutes = task_value(task, mk.ACCURACY), task_value(task, mk.ACCURACY_SE), task_minutes(task)
    grid = {(row, b): (measure(cells.get((*row, b)), accuracy, 3, se), measure(cells.get((*row, b)), minutes, 1))
            for row in rows for b in budgets}
    best: dict[tuple, bool] = {}
    for b in budgets:
        for index, goal in ((0, "max"), (1, "min")):
            flags = best_flags([grid[(row, b)][index][0] for row in rows], goal)
            best.update({(row, b, index): flag for row, flag in zip(rows, flags)})
    for row in rows:
        table.rows.append(list(row) + [grid[(row, b)][i][1] for b in budgets for i in (0, 1)])
        table.best.append([False, False] + [best[(row, b, i)] for b in budgets for i in (0, 1)])
    if any(text == NOT_RUN for cells_ in table.rows for text in cells_):
        table.notes.append("— (not run): no run for that setting and budget")
    table.notes += [f"task {task!r}; best accuracy / fastest time per budget in bold"] + notes
    return table
