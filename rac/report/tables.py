"""Table 1 of the paper from run directories: rows model x sparsity, columns calibration kind.

A run directory holds ``metrics.json`` and ``recipe.resolved.yaml`` (written by ``rac.engine.run``);
a grid directory holds run directories at any depth. Cells are strings (the terminal rendering in
``rac.ui`` and the markdown/CSV writers share them); ``best`` flags the best cell of each metric
group per row (highest accuracy, lowest run time / NLL / error).
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KIND_ORDER = ("c4", "text", "prompt", "rac")


class ReportError(ValueError):
    """A path holds no run, or a run directory is unreadable."""


@dataclass
class RunRecord:
    """One run: where it is, how it was made, what it measured."""

    path: Path
    model: str
    sparsity: str  # "dense" | "50%" | "2:4", with "+fp8" when quantized
    sparsity_value: float
    calibration: str  # "c4" | "text" | "prompt" | "rac"
    metrics: dict
    recipe: dict

    @property
    def evaluate(self) -> dict:
        return self.metrics.get("evaluate") or {}

    def artifact_dir(self, stage: str) -> Path | None:
        """The stage's artifact dir (from status.json, else the cache by fingerprint)."""
        status_file = self.path / "status.json"
        if status_file.is_file():
            artifact = (json.loads(status_file.read_text()).get(stage) or {}).get("artifact")
            if artifact and Path(artifact).is_dir():
                return Path(artifact)
        fingerprint = ((self.metrics.get("stages") or {}).get(stage) or {}).get("fingerprint")
        if fingerprint:
            from rac.engine.cache import Cache

            return Cache().lookup(stage, fingerprint)
        return None

    def probe_arrays(self, task: str) -> dict | None:
        """The per-token probe arrays of ``task`` (None when the artifact is gone)."""
        rel = (self.evaluate.get(task) or {}).get("arrays")
        base = self.artifact_dir("evaluate")
        if not rel or base is None or not (base / rel).is_file():
            return None
        from safetensors.torch import load_file

        return load_file(str(base / rel))


@dataclass
class ReportTable:
    """Rows of string cells; ``best[i][j]`` marks a highlighted cell."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    best: list[list[bool]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _sparsity(recipe: dict) -> tuple[str, float]:
    prune = recipe.get("prune") or {}
    if not prune:
        label, value = "dense", 0.0
    elif prune.get("pattern"):
        n, m = (int(x) for x in str(prune["pattern"]).split(":"))
        label, value = str(prune["pattern"]), n / m
    else:
        value = float(prune.get("sparsity") or 0.0)
        label = f"{round(value * 100)}%"
    if recipe.get("quantize"):
        label = "fp8" if label == "dense" else f"{label}+fp8"
    return label, value


def _calibration(recipe: dict) -> str:
    calib = recipe.get("calibration") or {}
    kind = calib.get("kind", "rac")
    if kind == "text" and any((s or {}).get("dataset") == "c4" for s in calib.get("sources") or []):
        return "c4"
    return str(kind)


def load_run(path: Path) -> RunRecord:
    """A run directory as a :class:`RunRecord`."""
    try:
        metrics = json.loads((path / "metrics.json").read_text())
        recipe = yaml.safe_load((path / "recipe.resolved.yaml").read_text()) or {}
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: unreadable run directory ({exc})") from exc
    label, value = _sparsity(recipe)
    model = str((recipe.get("model") or {}).get("id", "?"))
    return RunRecord(path, model, label, value, _calibration(recipe), metrics, recipe)


def collect_runs(path: Path | str) -> list[RunRecord]:
    """Every run under ``path`` (a run directory or a grid directory), sorted by model and sparsity."""
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path}: no such run or grid directory")
    if (path / "metrics.json").is_file() and (path / "recipe.resolved.yaml").is_file():
        dirs = [path]
    else:
        dirs = sorted(p.parent for p in path.rglob("metrics.json") if (p.parent / "recipe.resolved.yaml").is_file())
    if not dirs:
        raise ReportError(f"{path}: no run directories (metrics.json + recipe.resolved.yaml) found")
    runs = [load_run(d) for d in dirs]
    return sorted(runs, key=lambda r: (r.model, r.sparsity_value, r.sparsity, _kind_index(r.calibration)))


def _kind_index(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER)


def primary_task(records: list[RunRecord], types: tuple[str, ...] = ("math", "code")) -> str | None:
    """The first task of the given types that any run measured."""
    for record in records:
        for name, metrics in record.evaluate.items():
            if isinstance(metrics, dict) and metrics.get("type") in types and metrics.get("status") == "ok":
                return name
    return None


def _fmt(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


# (column label, value getter, cell formatter, best = "max" | "min" | None)
def _groups(task: str | None, probe: str | None) -> list[tuple[str, Any, Any, str | None]]:
    def task_metric(key: str, name: str | None):
        return lambda ev: (ev.get(name) or {}).get(key) if name else None

    def acc_cell(ev: dict) -> str:
        m = ev.get(task) or {}
        if m.get("accuracy") is None:
            return "–"
        return f"{m['accuracy']:.3f} ± {m.get('accuracy_se') or 0:.3f}"

    def minutes(ev: dict) -> float | None:
        m = ev.get(task) or {}
        seconds = m.get("seconds", m.get("wall_seconds"))
        return seconds / 60 if seconds is not None else None

    return [
        ("acc", task_metric("accuracy", task), acc_cell, "max"),
        ("min", minutes, lambda ev: _fmt(minutes(ev), 1), "min"),
        ("len", task_metric("mean_length", task), lambda ev: _fmt(task_metric("mean_length", task)(ev), 0), None),
        ("dec NLL", task_metric("decode_nll", probe), lambda ev: _fmt(task_metric("decode_nll", probe)(ev)), "min"),
        ("dec err", task_metric("decode_error", probe), lambda ev: _fmt(task_metric("decode_error", probe)(ev)), "min"),
        ("prm err", task_metric("prompt_error", probe), lambda ev: _fmt(task_metric("prompt_error", probe)(ev)), "min"),
    ]


def table_one(records: list[RunRecord], task: str | None = None) -> ReportTable:
    """Table 1: accuracy ± SE and run time per calibration kind, plus length and probe columns."""
    if not records:
        raise ReportError("no runs to tabulate")
    task = task or primary_task(records)
    probe = primary_task(records, ("probe",))
    kinds = sorted({r.calibration for r in records if r.sparsity not in ("dense", "fp8")} or {"rac"},
                   key=_kind_index)
    rows: dict[tuple[str, str], dict[str, RunRecord]] = {}
    for record in records:
        rows.setdefault((record.model, record.sparsity), {})[record.calibration] = record
    groups = [g for g in _groups(task, probe)
              if any(g[1](r.evaluate) is not None for r in records)]
    table = ReportTable(title=f"{task or 'no benchmark'}: accuracy ± SE, run time (min)",
                        columns=["model", "sparsity"] + [f"{g[0]} {k}" for g in groups for k in kinds])
    for (model, sparsity), by_kind in rows.items():
        if len(by_kind) == 1 and sparsity in ("dense", "fp8"):  # one baseline fills every column
            only = next(iter(by_kind.values()))
            by_kind = {k: only for k in kinds}
        cells, best = [model, sparsity], [False, False]
        for _label, getter, fmt, goal in groups:
            values = [getter(by_kind[k].evaluate) if k in by_kind else None for k in kinds]
            present = [v for v in values if v is not None]
            target = (max(present) if goal == "max" else min(present)) if goal and len(present) > 1 else None
            for kind, value in zip(kinds, values):
                cells.append(fmt(by_kind[kind].evaluate) if kind in by_kind else "–")
                best.append(target is not None and value == target and len(set(present)) > 1)
        table.rows.append(cells)
        table.best.append(best)
    if probe:
        table.notes.append(f"probe columns from task {probe!r}: decode NLL, mean L2 error on decode/prompt tokens")
    return table


def to_markdown(table: ReportTable) -> str:
    """GitHub markdown; best cells in bold."""
    lines = [f"**{table.title}**", "", "| " + " | ".join(table.columns) + " |",
             "|" + "|".join("---" for _ in table.columns) + "|"]
    for cells, best in zip(table.rows, table.best):
        lines.append("| " + " | ".join(f"**{c}**" if b else c for c, b in zip(cells, best)) + " |")
    lines.extend(["", *(f"_{note}_" for note in table.notes)])
    return "\n".join(lines).rstrip() + "\n"


def to_csv(table: ReportTable) -> str:
    """CSV of the cells (no highlighting) with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.columns)
    writer.writerows(table.rows)
    return buffer.getvalue()


def write_report(path: Path | str, out_dir: Path | str) -> list[Path]:
    """table.md, table.csv and the PNG plots for the runs under ``path``; returns the files written."""
    from rac.report.plots import write_plots

    records = collect_runs(path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = table_one(records)
    (out / "table.md").write_text(to_markdown(table))
    (out / "table.csv").write_text(to_csv(table))
    return [out / "table.md", out / "table.csv", *write_plots(records, out)]
