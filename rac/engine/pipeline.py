"""What the CLI verbs do, minus rendering: validate, plan, run, grid, diff."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rac.engine.cache import Cache, atomic_write_json, atomic_write_text
from rac.engine.plan import Plan, build_plan, invalidated_stages
from rac.engine.run import RunResult, run_recipe
from rac.engine.stage import ProgressReporter, Stage
from rac.markdown import markdown_table


def model_identities(recipe: dict) -> tuple[str, dict[str, str]]:
    """Identity of the target model, plus the off-policy rollout model's identity for the rollout stage."""
    from rac.models.load import resolve_model

    identity = resolve_model(recipe["model"]).identity
    extra: dict[str, str] = {}
    source = ((recipe.get("calibration") or {}).get("rollout") or {}).get("model")
    if source:
        extra["rollout"] = resolve_model(source).identity
    return identity, extra


def plan_recipe(recipe: dict, cache: Cache | None = None, stages: Sequence[Stage] | None = None) -> Plan:
    from rac.stages import load_stages

    identity, extra = model_identities(recipe)
    return build_plan(recipe, cache or Cache(), identity, stages or load_stages(), extra)


def run_loaded(loaded: Any, cache: Cache | None = None, run_dir: Path | None = None,
               progress: ProgressReporter | None = None,
               on_stage: Callable | None = None, stages: Sequence[Stage] | None = None) -> RunResult:
    from rac.stages import load_stages

    identity, extra = model_identities(loaded.data)
    return run_recipe(loaded, stages or load_stages(), identity, cache, run_dir, progress, on_stage, extra)


@dataclass
class DiffResult:
    changes: list
    invalidated: list[str]


def diff_loaded(a: Any, b: Any) -> DiffResult:
    """Semantic difference of two resolved recipes and the stages whose artifacts it invalidates."""
    from rac.recipe.diff import diff_recipes
    from rac.stages import STAGE_ORDER, load_stages

    changes = diff_recipes(a.data, b.data)
    try:
        stages = load_stages()
    except ImportError:  # stage modules unavailable: every stage is suspect
        return DiffResult(changes, list(STAGE_ORDER) if changes else [])
    paths = [c.path for c in changes]
    dirty = set(invalidated_stages(stages, a.data, paths)) | set(invalidated_stages(stages, b.data, paths))
    # enabling/disabling a stage changes the plan itself
    enabled_a = {s.name for s in stages if s.enabled(a.data)}
    enabled_b = {s.name for s in stages if s.enabled(b.data)}
    dirty |= enabled_a ^ enabled_b
    return DiffResult(changes, [name for name in STAGE_ORDER if name in dirty])


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
