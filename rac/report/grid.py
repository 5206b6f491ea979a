"""A grid's summary: one flat row per cell (overrides, status, per-stage seconds, headline metrics),
written as summary.csv, summary.md and grid.json in the grid directory."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rac.markdown import markdown_table
from rac.pipeline.cache import atomic_write_json, atomic_write_text
from rac.pipeline.run import RunResult


def grid_summary_rows(results: Sequence[tuple[Any, RunResult | None, str | None]]) -> list[dict]:
    """One flat row per cell: overrides, status, per-stage seconds and headline evaluation metrics.

    A failed cell still shows what its completed stages measured (``result`` is then the partial
    result from ``StageFailed.result``), with ``failed_stage`` and ``error`` next to it. The metric
    keys are the ones evaluate writes (``rac.report.metric_keys``), e.g. ``gsm8k.accuracy_se``.
    """
    from rac.report.labels import calibration_label, compression_label, uses_calibration
    from rac.report.metric_keys import headline

    rows: list[dict] = []
    for cell, result, error in results:
        row: dict[str, Any] = {"cell": cell.name}
        recipe = getattr(cell.loaded, "data", None)
        if isinstance(recipe, dict):  # what was really done, in the paper's words
            row["compression"] = compression_label(recipe)
            row["calibration"] = calibration_label(recipe) if uses_calibration(recipe) else "–"
        overlays = [Path(str(item)[1:]).stem for item in map(str, cell.overrides) if item.startswith("@")]
        if overlays:
            row["overlays"] = "+".join(overlays)
        for item in map(str, cell.overrides):
            if not item.startswith("@"):
                key, _, value = item.lstrip("+~").partition("=")
                row[key] = value
        row["status"] = "failed" if error else "done"
        if result is not None:
            failure = result.metrics.get("failure") or {}
            if failure.get("stage"):
                row["failed_stage"] = failure["stage"]
        if error:
            row["error"] = error
        if result is not None:
            row["run_dir"] = str(result.run_dir)
            for stage, record in result.metrics.get("stages", {}).items():
                state = record.get("status")
                row[f"{stage}_s"] = ("cached" if record.get("cache_hit") else
                                     round(float(record["seconds"]), 1) if state == "done" else state)
            for task, metrics in (result.metrics.get("evaluate") or {}).items():
                if isinstance(metrics, dict):
                    for key, number in headline(metrics).items():
                        row[f"{task}.{key}"] = round(number, 4)
        rows.append(row)
    from rac.report.length import summary_length_ratios

    summary_length_ratios(rows)  # length relative to the grid's dense cell (needs both cells' records)
    return rows


def write_grid_summary(grid_dir: Path, rows: list[dict]) -> tuple[Path, Path]:
    """summary.csv and summary.md in the grid directory (atomic)."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    csv_path, md_path = grid_dir / "summary.csv", grid_dir / "summary.md"
    atomic_write_text(csv_path, buffer.getvalue())
    lines = markdown_table(columns, ([row.get(c, "") for c in columns] for row in rows))
    atomic_write_text(md_path, "\n".join(lines) + "\n")
    atomic_write_json(grid_dir / "grid.json", {"cells": rows})
    return csv_path, md_path


def grid_dir_for(output_dir: str | Path, name: str) -> Path:
    """<output_dir>/<grid name>; cells are subdirectories named from their overrides plus a hash."""
    return Path(output_dir) / name
