"""Shared machinery of the paper layouts (``rac report --paper``): placing runs into fixed cells, numbers
with their standard error, and the reason a cell is empty.

A paper table has a fixed shape (Table 1: model x sparsity rows, C4 / Prompt / RAC columns). Each run
(or each group of runs aggregated over a key, ``--aggregate seed``) is placed by a layout's key
function; two runs that land in one cell are an error naming both and the keys they differ in (the
report's existing rule: never merge runs silently). Runs a layout has no cell for are listed in the
table's notes with the reason, and a cell no run fills reads "— (not run)"; a cell whose run failed
before measuring reads "— (<stage> failed)".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from rac.report import metric_keys as mk
from rac.report.cells import BOOKKEEPING, group_runs
from rac.report.labels import calibration_label, flatten, model_label, value_text
from rac.report.runs import ReportError, RunRecord

MISSING = "—"
NOT_RUN = f"{MISSING} (not run)"
Getter = Callable[[RunRecord], "float | None"]
# a layout's key function: the cell of a run, or a string saying why the layout has no cell for it
KeyFn = Callable[[RunRecord], "tuple | str"]


def short_model(recipe: dict) -> str:
    """"DeepSeek-R1-Distill-Qwen-7B" -> "7B" (the paper's row label); any other model keeps its name."""
    label = model_label(recipe)
    match = re.match(r"DeepSeek-R1-Distill-(?:Qwen|Llama)-(\d+(?:\.\d+)?B)$", label)
    return match.group(1) if match else label


def model_order(label: str) -> tuple[float, str]:
    """Sort models by size ("1.5B" < "7B" < "14B"), unknown sizes last by name."""
    match = re.search(r"(\d+(?:\.\d+)?)([BM])\b", label, flags=re.IGNORECASE)
    if not match:
        return math.inf, label
    return float(match.group(1)) * (1e3 if match.group(2).upper() == "B" else 1.0), label


def is_dense(record: RunRecord) -> bool:
    """Neither pruned nor quantized (the paper's "Dense" rows and baselines)."""
    return not record.recipe.get("prune") and not record.recipe.get("quantize")


def unstructured(record: RunRecord) -> bool:
    """Pruned without an N:M pattern in any scope and not quantized (Table 1 / 2 rows, Figure 1 points);
    the row label is the compression label ("50%", "50% Wanda", "50% blocks [0, 3)" for a CPU mirror)."""
    prune = record.recipe.get("prune") or {}
    scopes = prune.get("scopes") or [{}]
    return bool(prune) and not record.recipe.get("quantize") and not prune.get("pattern") and \
        not any(isinstance(s, dict) and s.get("pattern") for s in scopes)


def calibration_column(recipe: dict, contrast_policy: bool = False) -> str:
    """The paper's column names: "C4", "Prompt", "RAC" (or "RAC on-policy" / "RAC off-policy (14B)")."""
    label = calibration_label(recipe, contrast_policy)
    if label == "prompt":
        return "Prompt"
    model = ((recipe.get("calibration") or {}).get("rollout") or {}).get("model")
    if model:
        return f"RAC off-policy ({short_model({'model': model})})"
    return label


def _differ(a: RunRecord, b: RunRecord) -> list[str]:
    fa, fb = flatten(a.recipe), flatten(b.recipe)
    keys = sorted(set(fa) | set(fb))
    return [k for k in keys if not any(k == p or k.startswith(p + ".") for p in BOOKKEEPING)
            and value_text(fa.get(k)) != value_text(fb.get(k))]


def place(records: Sequence[RunRecord], key: KeyFn, layout: str,
          aggregate: Sequence[str] = ()) -> tuple[dict[tuple, list[RunRecord]], list[str]]:
    """(cell -> its runs, notes on runs left out); two runs in one cell raise ReportError naming both."""
    groups, _ = group_runs(records, aggregate)
    cells: dict[tuple, list[RunRecord]] = {}
    left_out: list[str] = []
    for runs in groups:
        where = key(runs[0])
        if isinstance(where, str):
            left_out += [f"left out of {layout}: {r.path} ({where})" for r in runs]
            continue
        if where in cells:
            first = cells[where][0]
            keys = ", ".join(_differ(first, runs[0])[:6]) or "nothing"
            raise ReportError(f"runs {first.path} and {runs[0].path} would share one {layout} cell "
                              f"({' / '.join(map(str, where))}); they differ in {keys}; report them separately, "
                              "or pass --aggregate KEY to average runs that differ only in KEY")
        cells[where] = runs
    return cells, left_out


def failure_reason(runs: Sequence[RunRecord]) -> str:
    """"— (prune failed)" when a run failed before measuring, else "— (not measured)"."""
    reasons = [r.failure.split(":", 1)[0] for r in runs if r.failure]
    return f"{MISSING} ({'; '.join(dict.fromkeys(reasons))})" if reasons else f"{MISSING} (not measured)"


def task_value(task: str | None, *path: str) -> Getter:
    """A number inside ``evaluate.<task>`` (nested ``path``), None when absent."""
    def getter(record: RunRecord) -> float | None:
        value: Any = record.evaluate.get(task) if task else None
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return getter


def task_minutes(task: str | None) -> Getter:
    """The evaluate stage's time for the task in minutes (the paper's "total evaluation time")."""
    seconds, wall = task_value(task, mk.SECONDS), task_value(task, mk.WALL_SECONDS)

    def getter(record: RunRecord) -> float | None:
        value = seconds(record)
        value = wall(record) if value is None else value
        return None if value is None else value / 60
    return getter


def measure(runs: Sequence[RunRecord] | None, get: Getter, digits: int, se: Getter | None = None,
            suffix: str = "") -> tuple[float | None, str]:
    """(value for highlighting, cell text): one run "0.900 ± 0.013"; aggregated runs mean ± SE over them."""
    if not runs:
        return None, NOT_RUN
    values = [v for v in map(get, runs) if v is not None]
    if not values:
        return None, failure_reason(runs)
    if len(runs) > 1:
        if len(values) == 1:
            return values[0], f"{values[0]:.{digits}f}{suffix} (n=1 of {len(runs)})"
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
        return mean, f"{mean:.{digits}f} ± {spread:.{digits}f}{suffix} (n={len(values)})"
    one_se = se(runs[0]) if se else None
    return values[0], f"{values[0]:.{digits}f}{suffix}" + (f" ± {one_se:.{digits}f}" if one_se is not None else "")


def best_flags(values: Sequence[float | None], goal: str | None) -> list[bool]:
    """Which values are the best ("max" / "min"); none when fewer than two distinct values."""
    present = [v for v in values if v is not None]
    if not goal or len(set(present)) < 2:
        return [False] * len(values)
    target = max(present) if goal == "max" else min(present)
    return [v is not None and v == target for v in values]
