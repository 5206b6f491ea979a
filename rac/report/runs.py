"""Run directories as records: where a run is, how it was made, what it measured, how it ended.

A run directory (its layout: ``rac.pipeline.rundir.RunDir``) holds ``recipe.resolved.yaml``,
``status.json`` and ``metrics.json``; a grid directory holds run directories at any depth. Artifacts
are found through the cache root the report was given (``rac report --cache``, else ``$RAC_CACHE``). A run whose later stage failed
still counts: ``metrics.json`` then has ``status: failed`` and the completed stages' metrics. A run
directory without ``metrics.json`` (a run killed mid-way, or written before rac kept partial metrics)
is read from ``status.json`` and the evaluate artifact it points to, so its measured numbers show.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rac.errors import RacError
from rac.pipeline.cache import Cache
from rac.pipeline.rundir import RESOLVED_RECIPE, RunDir
from rac.report.labels import compression_label, compression_value, model_label


class ReportError(RacError, ValueError):
    """A path holds no run, a run directory is unreadable, or two runs would share one table cell."""


@dataclass
class RunRecord:
    """One run: where it is, how it was made (resolved recipe), what it measured, how it ended."""

    path: Path
    recipe: dict
    metrics: dict
    status: dict = field(default_factory=dict)
    cache: Cache | None = None  # where its artifacts are looked up (None: $RAC_CACHE or ~/.cache/rac)

    @property
    def model(self) -> str:
        return model_label(self.recipe)

    @property
    def sparsity(self) -> str:
        """What was done to the weights, e.g. "dense", "50%", "2:4 MLP first+last third + FP8"."""
        return compression_label(self.recipe)

    @property
    def sparsity_value(self) -> float:
        return compression_value(self.recipe)

    @property
    def evaluate(self) -> dict:
        return self.metrics.get("evaluate") or {}

    @property
    def failure(self) -> str | None:
        """"<stage> failed: <error>" for the first stage that did not complete, None when all did."""
        failure = self.metrics.get("failure") or {}
        if failure.get("stage"):
            return f"{failure['stage']} failed: {failure.get('error', '')}".rstrip(": ")
        for stage, record in self.status.items():
            if isinstance(record, dict) and record.get("status") not in ("done", "cached"):
                return f"{stage} {record.get('status', 'pending')}" + (f": {record['error']}" if record.get("error") else "")
        return None

    def artifact_dir(self, stage: str) -> Path | None:
        """The stage's artifact dir (from status.json, else ``self.cache`` by fingerprint)."""
        return RunDir(self.path, self.cache).artifact(stage, self.metrics)

    def probe_arrays(self, task: str) -> dict | None:
        """The per-token probe arrays of ``task`` (None when the artifact is gone)."""
        rel = (self.evaluate.get(task) or {}).get("arrays")
        base = self.artifact_dir("evaluate")
        if not rel or base is None or not (base / rel).is_file():
            return None
        from safetensors.torch import load_file

        return load_file(str(base / rel))


def _read_json(path: Path) -> dict:
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} is not a JSON object")
    return data


def _metrics_from_status(status: dict) -> dict:
    """metrics.json's shape rebuilt from status.json (evaluate metrics from its artifact, when done)."""
    metrics: dict = {"stages": {}, "evaluate": {}}
    for stage, record in status.items():
        if isinstance(record, dict):
            metrics["stages"][stage] = {"status": record.get("status"), "fingerprint": record.get("fingerprint")}
    evaluate = status.get("evaluate") or {}
    artifact = Path(evaluate["artifact"]) / "metrics.json" if evaluate.get("artifact") else None
    if evaluate.get("status") in ("done", "cached") and artifact is not None and artifact.is_file():
        metrics["evaluate"] = _read_json(artifact)
    return metrics


def load_run(path: Path, cache: Cache | None = None) -> RunRecord:
    """A run directory as a :class:`RunRecord` (its artifacts looked up in ``cache``)."""
    run = RunDir(path, cache)
    try:
        recipe = run.read_recipe()
        status = run.read_status(strict=True)
        metrics = run.read_metrics()
        if metrics is None:
            metrics = _metrics_from_status(status)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise ReportError(f"{path}: unreadable run directory ({exc})") from exc
    return RunRecord(path, recipe, metrics, status, cache)


def collect_runs(path: Path | str, cache: Cache | None = None) -> list[RunRecord]:
    """Every run under ``path`` (a run directory or a grid directory), in path order."""
    path = Path(path)
    if not path.exists():
        raise ReportError(f"{path}: no such run or grid directory")
    if RunDir(path).is_run():
        dirs = [path]
    else:
        dirs = sorted(p.parent for p in path.rglob(RESOLVED_RECIPE) if RunDir(p.parent).is_run())
    if not dirs:
        raise ReportError(f"{path}: no run directories (recipe.resolved.yaml + metrics.json or status.json) found")
    return [load_run(d, cache) for d in dirs]


def primary_task(records: Sequence[RunRecord], types: tuple[str, ...] = ("math", "code")) -> str | None:
    """The first task of the given types that any run measured."""
    for record in records:
        for name, metrics in record.evaluate.items():
            if isinstance(metrics, dict) and metrics.get("type") in types and metrics.get("status") == "ok":
                return name
    return None
