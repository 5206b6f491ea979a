"""Generation length in reports (issue 18): per cell, how long it generates relative to the dense model on
the same problems, how often it hits the budget, ends, loops, and what it cost.

:func:`annotate_length_ratios` pairs each run with the dense run of the same model and the same
``evaluate`` section, reads both runs' per-sample records (``records/<task>.jsonl`` in the evaluate
artifact) and puts ``rac.eval.length.length_ratio``'s ratio into the run's in-memory ``length`` block
(``metric_keys.LENGTH_RATIO``), so the default table, the grid summary and :func:`length_table` show it.
:func:`length_table` is ``rac report --paper length``: one row per cell with the length metrics,
accuracy, the probe's decode NLL and the stage seconds (prune, recover when present, total);
:func:`write_length_plots` draws length against accuracy and against sparsity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from rac.eval.length import length_ratio
from rac.report import metric_keys as mk
from rac.report.cells import FILL, Cell, arrange
from rac.report.labels import value_text
from rac.report.paper_cells import is_dense, measure, task_value
from rac.report.report_table import ReportTable
from rac.report.runs import RunRecord, primary_task


def task_records(record: RunRecord, task: str) -> list[dict] | None:
    """The per-sample records of ``task`` (None when the evaluate artifact or the file is gone)."""
    base = record.artifact_dir("evaluate")
    path = base / "records" / f"{task}.jsonl" if base is not None else None
    if path is None or not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dense_partner(record: RunRecord, records: Sequence[RunRecord]) -> RunRecord | None:
    """The dense run of the same model evaluated the same way (else the model's only dense run)."""
    same_model = [r for r in records if is_dense(r) and r.model == record.model]
    same_eval = [r for r in same_model if value_text(r.recipe.get("evaluate")) == value_text(record.recipe.get("evaluate"))]
    if len(same_eval) == 1:
        return same_eval[0]
    return same_model[0] if len(same_model) == 1 else None


def annotate_length_ratios(records: Sequence[RunRecord], task: str | None = None) -> dict[Path, str]:
    """Add ``length.ratio_to_dense`` to each run's ``task`` metrics (in memory); returns why it is
    missing, per run directory, for the runs it could not pair."""
    task = task or primary_task(records)
    reasons: dict[Path, str] = {}
    if task is None:
        return reasons
    cache: dict[Path, list[dict] | None] = {}

    def cached(record: RunRecord) -> list[dict] | None:
        if record.path not in cache:
            cache[record.path] = task_records(record, task)
        return cache[record.path]

    for record in records:
        metrics = record.evaluate.get(task)
        if not isinstance(metrics, dict) or not isinstance(metrics.get(mk.LENGTH), dict):
            reasons[record.path] = f"no {task} length metrics"
            continue
        dense = dense_partner(record, records)
        if dense is None:
            reasons[record.path] = "no dense run of this model"
            continue
        ours, theirs = cached(record), cached(dense)
        if ours is None or theirs is None:
            reasons[record.path] = f"records/{task}.jsonl gone ({'this run' if ours is None else 'dense run'})"
            continue
        try:
            metrics[mk.LENGTH][mk.LENGTH_RATIO] = length_ratio(ours, theirs)["ratio"]
        except ValueError as exc:
            reasons[record.path] = str(exc)
    return reasons


def _stage_seconds(stage: str | None):
    def getter(record: RunRecord) -> float | None:
        stages = record.metrics.get("stages") or {}
        chosen = [stages.get(stage)] if stage else list(stages.values())
        values = [float(s["seconds"]) for s in chosen if isinstance(s, dict) and isinstance(s.get("seconds"), (int, float))]
        return sum(values) if values else None
    return getter


def length_table(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> ReportTable:
    """One row per cell: accuracy, mean tokens, ratio to dense, budget hits, EOS / end-of-reasoning rate,
    loop share, decode NLL, stage seconds. Missing numbers read "— (reason)"."""
    task, probe = primary_task(records), primary_task(records, ("probe",))
    reasons = annotate_length_ratios(records, task)
    layout = arrange(records, aggregate)
    length = (lambda key: task_value(task, mk.LENGTH, key))
    has_recover = any("recover" in (r.metrics.get("stages") or {}) for r in records)
    columns = [  # (header, getter, digits, scale)
        ("accuracy", task_value(task, mk.ACCURACY), 3, 1.0),
        ("mean tokens", length(mk.LENGTH_MEAN_TOKENS), 1, 1.0),
        ("length / dense", length(mk.LENGTH_RATIO), 2, 1.0),
        ("budget hit %", length(mk.BUDGET_HIT_RATE), 1, 100.0),
        ("EOS %", length(mk.EOS_RATE), 1, 100.0),
        ("end of reasoning %", length(mk.REASONING_END_RATE), 1, 100.0),
        ("loop share %", length(mk.LOOP_SHARE), 1, 100.0),
        ("decode NLL", task_value(probe, mk.DECODE_NLL), 3, 1.0),
        ("prune s", _stage_seconds("prune"), 1, 1.0),
        *([("recover s", _stage_seconds("recover"), 1, 1.0)] if has_recover else []),
        ("total s", _stage_seconds(None), 1, 1.0),
    ]
    table = ReportTable(title=f"Generation length ({task or 'no generation task'}) per cell",
                        columns=[*layout.lead, "calibration", *(c[0] for c in columns)], lead=len(layout.lead) + 1)
    for cell in layout.cells:
        row = [*cell.row, "–" if cell.column == FILL else cell.column]
        for header, getter, digits, scale in columns:
            scaled = (lambda g, s: (lambda r: None if (v := g(r)) is None else v * s))(getter, scale)
            _, text = measure(cell.runs, scaled, digits)
            stage = header[:-2] if header in ("prune s", "recover s") else None
            if stage and not any(stage in (r.metrics.get("stages") or {}) for r in cell.runs):
                text = f"— (no {stage} stage)"
            elif header == "length / dense" and text.startswith("—") and not any(r.failure for r in cell.runs):
                text = "1.00 (dense)" if all(is_dense(r) for r in cell.runs) else \
                    f"— ({reasons.get(cell.runs[0].path, 'not measured')})"
            row.append(text)
        table.rows.append(row)
        table.best.append([False] * len(row))
    table.notes.append(f"length / dense: rac.eval.length.length_ratio on the problems both runs evaluated (task {task!r}); "
                       f"decode NLL from probe task {probe!r}" if probe else "no probe task: decode NLL not measured")
    table.notes += [f"{r.path}: {r.failure}" for r in records if r.failure]
    return table


def write_length_plots(records: Sequence[RunRecord], out_dir: Path, aggregate: Sequence[str] = ()) -> list[Path]:
    """length_vs_accuracy.png (one point per cell) and length_vs_sparsity.png (mean tokens per calibration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from rac.report.plots import plot_metric_vs_sparsity

    task = primary_task(records)
    if task is None:
        return []
    layout = arrange(records, aggregate)
    written: list[Path] = []
    tokens, accuracy = task_value(task, mk.LENGTH, mk.LENGTH_MEAN_TOKENS), task_value(task, mk.ACCURACY)
    points: list[tuple[float, float, Cell]] = []
    for cell in layout.cells:
        x, y = measure(cell.runs, tokens, 1)[0], measure(cell.runs, accuracy, 3)[0]
        if x is not None and y is not None:
            points.append((x, y, cell))
    if points:
        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        for x, y, cell in points:
            label = " / ".join([*cell.row[1:], *([] if cell.column == FILL else [cell.column])])
            ax.scatter([x], [y], marker="s" if cell.row[1] == "dense" else "o")
            ax.annotate(label, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
        ax.set_xlabel(f"mean generated tokens ({task})")
        ax.set_ylabel("accuracy")
        ax.grid(alpha=0.3)
        ax.set_title("generated length vs accuracy (one point per cell)")
        fig.tight_layout()
        fig.savefig(out_dir / "length_vs_accuracy.png", dpi=120)
        plt.close(fig)
        written.append(out_dir / "length_vs_accuracy.png")
    path = plot_metric_vs_sparsity(layout, task, mk.MEAN_LENGTH, "mean generated tokens", out_dir / "length_vs_sparsity.png")
    return written + ([path] if path else [])


def summary_length_ratios(rows: list[dict]) -> None:
    """Grid summary rows (one per cell, with ``run_dir``) get ``<task>.length_ratio``: each cell's length
    relative to the grid's dense cell of the same model (rows whose run is unreadable are left as they are)."""
    from rac.report.runs import ReportError, load_run

    loaded: list[tuple[dict, RunRecord]] = []
    for row in rows:
        try:
            loaded.append((row, load_run(Path(row["run_dir"])))) if row.get("run_dir") else None
        except ReportError:
            continue
    records = [record for _, record in loaded]
    tasks = {name for r in records for name, m in r.evaluate.items()
             if isinstance(m, dict) and isinstance(m.get(mk.LENGTH), dict)}
    for task in sorted(tasks):
        annotate_length_ratios(records, task)
        for row, record in loaded:
            ratio = ((record.evaluate.get(task) or {}).get(mk.LENGTH) or {}).get(mk.LENGTH_RATIO)
            if isinstance(ratio, (int, float)):
                row[f"{task}.length_ratio"] = round(float(ratio), 4)
