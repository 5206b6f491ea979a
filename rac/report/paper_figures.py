"""The paper's Figures 1 and 2 from run directories: the PNG and the numbers behind it as a table.

- Figure 1: accuracy (± SE) and total evaluation time against unstructured sparsity, the dense model
  at 0%; one panel per model, one line pair per calibration (the paper: 7B, C4, 30/50/70%).
- Figure 2: the per-token reconstruction-error ratio r_t = e_t(Prompt) / e_t(RAC) of the two probe runs
  (same model and sparsity, prompt-only vs RAC calibration), from the probe arrays each run's evaluate
  artifact keeps (``probe/<task>.safetensors``), drawn by ``rac.report.plots.plot_error_ratio``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from rac.report import metric_keys as mk
from rac.report.labels import compression_label, compression_value
from rac.report.paper_cells import (
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
from rac.report.plots import error_ratio_matrix, plot_error_ratio
from rac.report.report_table import ReportTable
from rac.report.runs import ReportError, RunRecord, primary_task

Point = tuple[float, float | None, float | None, float | None]  # sparsity %, accuracy, SE, minutes


def _figure1_key(record: RunRecord) -> tuple | str:
    if is_dense(record):
        return (short_model(record.recipe), "Dense", 0.0)
    if not unstructured(record):
        return f"{compression_label(record.recipe)} is not unstructured sparsity"
    return (short_model(record.recipe), calibration_column(record.recipe), compression_value(record.recipe))


def figure1_series(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> tuple[dict[tuple[str, str], list[Point]], list[str]]:
    """(model, calibration) -> points sorted by sparsity (the model's dense run at 0%), and notes."""
    task = primary_task(records, ("math", "code"))
    if task is None:
        raise ReportError("Figure 1: no run has a finished math/code evaluation task")

    cells, notes = place(records, _figure1_key, "Figure 1", aggregate)
    acc, se, minutes = task_value(task, mk.ACCURACY), task_value(task, mk.ACCURACY_SE), task_minutes(task)
    series: dict[tuple[str, str], list[Point]] = {}
    for (model, calibration, value), runs in cells.items():
        if calibration == "Dense":
            continue
        a, _ = measure(runs, acc, 3)
        s = se(runs[0]) if len(runs) == 1 else None
        series.setdefault((model, calibration), []).append((100 * value, a, s, measure(runs, minutes, 1)[0]))
    for (model, _calibration), points in series.items():
        dense = cells.get((model, "Dense", 0.0))
        if dense:
            points.append((0.0, measure(dense, acc, 3)[0], se(dense[0]) if len(dense) == 1 else None,
                           measure(dense, minutes, 1)[0]))
        points.sort()
    if not series:
        raise ReportError("Figure 1: no pruned run with unstructured sparsity to plot")
    return dict(sorted(series.items(), key=lambda kv: (model_order(kv[0][0]), kv[0][1]))), notes


def figure1(records: Sequence[RunRecord], out_dir: Path | None, aggregate: Sequence[str] = ()) -> tuple[ReportTable, list[Path]]:
    """figure1.png (accuracy and evaluation time vs sparsity) and its numbers as a table."""
    series, notes = figure1_series(records, aggregate)
    task = primary_task(records, ("math", "code"))
    cells, _ = place(records, _figure1_key, "Figure 1", aggregate)
    acc, se, minutes = task_value(task, mk.ACCURACY), task_value(task, mk.ACCURACY_SE), task_minutes(task)
    table = ReportTable(title="Figure 1: accuracy and total evaluation time vs sparsity",
                        columns=["Model", "Calibration", "Sparsity", "Accuracy ± SE", "Eval time (min)"], lead=3)
    plotted = {model for model, _ in series}  # a dense run of a model with no pruned run is no point of the figure
    for model, calibration, value in sorted((k for k in cells if k[0] in plotted),
                                            key=lambda k: (model_order(k[0]), k[1] != "Dense", k[1], k[2])):
        runs = cells[(model, calibration, value)]
        table.rows.append([model, calibration, f"{100 * value:g}%", measure(runs, acc, 3, se)[1],
                           measure(runs, minutes, 1)[1]])
        table.best.append([False] * 5)
    table.notes += notes
    if out_dir is None:
        return table, []
    models = list(dict.fromkeys(model for model, _ in series))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models):
        twin = ax.twinx()
        for index, ((m, calibration), points) in enumerate(series.items()):
            if m != model:
                continue
            color = f"C{index}"
            xs = [p[0] for p in points if p[1] is not None]
            ax.errorbar(xs, [p[1] for p in points if p[1] is not None],
                        yerr=[p[2] or 0.0 for p in points if p[1] is not None], marker="o", capsize=3, color=color,
                        label=f"{calibration}: accuracy")
            twin.plot([p[0] for p in points if p[3] is not None], [p[3] for p in points if p[3] is not None],
                      marker="s", linestyle="--", color=color, label=f"{calibration}: eval time")
        ax.set_title(model)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("accuracy")
        twin.set_ylabel("total evaluation time (min)")
        handles = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    fig.suptitle("Pruning hurts both accuracy and run time")
    fig.tight_layout()
    path = Path(out_dir) / "figure1.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return table, [path]


def _ratio_stats(matrix: np.ndarray, boundary: int) -> tuple[float, float, float]:
    """(median r on prompt tokens, median r on decode tokens, share of decode tokens with r > 1)."""
    prompt, decode = matrix[:, :boundary], matrix[:, boundary:]
    prompt, decode = prompt[np.isfinite(prompt)], decode[np.isfinite(decode)]
    return (float(np.median(prompt)) if prompt.size else float("nan"),
            float(np.median(decode)) if decode.size else float("nan"),
            float((decode > 1).mean()) if decode.size else float("nan"))


def figure2(records: Sequence[RunRecord], out_dir: Path | None, aggregate: Sequence[str] = ()) -> tuple[ReportTable, list[Path]]:
    """One heatmap per (model, sparsity) with both a prompt-only and a RAC probe run, and their summary."""
    probe = primary_task(records, ("probe",))
    if probe is None:
        raise ReportError("Figure 2: no run has a finished probe task (the grid needs the decode-fidelity probe, "
                          "e.g. recipes/overlays/eval/probe_math500.yaml)")

    def key(record: RunRecord) -> tuple | str:
        column = calibration_column(record.recipe) if record.recipe.get("prune") else "dense"
        if column not in ("Prompt", "RAC"):
            return f"calibration {column}: Figure 2 compares Prompt with RAC"
        return (short_model(record.recipe), compression_label(record.recipe), column)

    cells, notes = place(records, key, "Figure 2", aggregate)
    table = ReportTable(title="Figure 2: per-token reconstruction error ratio r_t = e_t(Prompt) / e_t(RAC)",
                        columns=["Model", "Sparsity", "Problems", "median r (prompt tokens)",
                                 "median r (decode tokens)", "decode tokens with r > 1 (RAC better)", "heatmap"], lead=2)
    written: list[Path] = []
    pairs = sorted({k[:2] for k in cells}, key=lambda k: (model_order(k[0]), k[1]))
    for model, sparsity in pairs:
        runs = {c: cells.get((model, sparsity, c)) for c in ("Prompt", "RAC")}
        missing = [f"{c}: " + ("not run" if not r else "aggregated runs have no single array" if len(r) > 1 else
                               (r[0].failure or "").split(":", 1)[0] or "probe arrays gone (evaluate artifact not found)")
                   for c, r in runs.items() if not r or len(r) > 1 or r[0].probe_arrays(probe) is None]
        if missing:
            table.rows.append([model, sparsity] + [f"— ({'; '.join(missing)})"] + ["—"] * 4)
            table.best.append([False] * 7)
            continue
        prompt_runs, rac_runs = runs["Prompt"], runs["RAC"]
        assert prompt_runs and rac_runs
        arrays_p, arrays_r = prompt_runs[0].probe_arrays(probe), rac_runs[0].probe_arrays(probe)
        assert arrays_p is not None and arrays_r is not None
        matrix, boundary = error_ratio_matrix(arrays_p, arrays_r)
        prompt_r, decode_r, share = _ratio_stats(matrix, boundary)
        name = re.sub(r"_+", "_", re.sub(r"[^A-Za-z0-9.-]", "_", f"figure2_{model}_{sparsity}".replace("%", "pct"))).strip("_")
        if out_dir is not None:
            written.append(plot_error_ratio(arrays_p, arrays_r, "Prompt", "RAC", Path(out_dir) / f"{name}.png",
                                            f"{model}, {sparsity}: r_t = e_t(Prompt) / e_t(RAC)"))
        table.rows.append([model, sparsity, str(matrix.shape[0]), f"{prompt_r:.3f}", f"{decode_r:.3f}",
                           f"{share:.1%}", f"{name}.png" if out_dir is not None else "—"])
        table.best.append([False] * 7)
    if not table.rows:
        raise ReportError("Figure 2: no (model, sparsity) with a prompt-only or RAC probe run")
    table.notes += [f"probe task {probe!r}; r > 1: RAC has the lower error"] + notes
    return table, written
