"""The run directory's layout, read and written in this one place (engine, CLI, API and reports).

A run directory holds the recipe as given (``recipe/``: every file of its ``base:`` chain), the
resolved recipe (``recipe.resolved.yaml``), the overrides, ``env.json``, ``run.log``, ``status.json``
(per stage: status, fingerprint, attempts, artifact) and ``metrics.json``. Stage artifacts live in the
content-addressed cache; :meth:`RunDir.artifact` finds them through ``status.json`` or, when that path
is gone (a moved cache, a copied run directory), by fingerprint in the cache root it was given.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from rac.pipeline.cache import Cache, atomic_write_json, atomic_write_text

log = logging.getLogger("rac.run")

RESOLVED_RECIPE = "recipe.resolved.yaml"
STATUS = "status.json"
METRICS = "metrics.json"
RUN_LOG = "run.log"
ENV = "env.json"
OVERRIDES = "overrides.json"
GIVEN_RECIPE = "recipe"
RANKS = "ranks"
LOCAL_ARTIFACTS = "artifacts"  # uncached stages (export) write here


@dataclass(frozen=True)
class RunDir:
    """One run directory; ``cache`` is where its cached artifacts are looked up by fingerprint."""

    path: Path
    cache: Cache | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))

    # -- paths ----------------------------------------------------------------------------------
    @property
    def status_file(self) -> Path:
        return self.path / STATUS

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS

    @property
    def recipe_file(self) -> Path:
        return self.path / RESOLVED_RECIPE

    @property
    def log_file(self) -> Path:
        return self.path / RUN_LOG

    @property
    def env_file(self) -> Path:
        return self.path / ENV

    def rank_log_file(self, rank: int) -> Path:
        """The log of a torchrun rank other than 0 (``ranks/rank<N>.log``)."""
        return self.path / RANKS / f"rank{rank}.log"

    def local_artifact(self, stage: str) -> Path:
        """Where an uncached stage's artifact lands (inside the run directory)."""
        return self.path / LOCAL_ARTIFACTS / stage

    def is_run(self) -> bool:
        """A resolved recipe plus metrics.json or status.json: a run, finished or not."""
        return self.recipe_file.is_file() and (self.metrics_file.is_file() or self.status_file.is_file())

    # -- reading --------------------------------------------------------------------------------
    def read_status(self, strict: bool = False) -> dict[str, dict]:
        """Per-stage status ({} when absent). A corrupt file raises with ``strict`` (reports), else it is
        reset with a warning (a rerun starts a fresh status; cached stages are still reused)."""
        if not self.status_file.exists():
            return {}
        try:
            data = json.loads(self.status_file.read_text())
        except (OSError, ValueError) as exc:
            if strict:
                raise ValueError(f"{STATUS}: {exc}") from exc
            log.warning("%s is unreadable (%s); starting a fresh status (cached stages are still reused)",
                        self.status_file, exc)
            return {}
        if strict and not isinstance(data, dict):
            raise ValueError(f"{STATUS} is not a JSON object")
        if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
            if strict:
                return {stage: record for stage, record in data.items() if isinstance(record, dict)}
            log.warning("%s has an unexpected shape; starting a fresh status", self.status_file)
            return {}
        return data

    def read_metrics(self) -> dict | None:
        """metrics.json as a dict (None when the run has none yet); raises ValueError when corrupt."""
        if not self.metrics_file.is_file():
            return None
        data = json.loads(self.metrics_file.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{METRICS} is not a JSON object")
        return data

    def read_recipe(self) -> dict:
        """The resolved recipe; raises ValueError when it is not a mapping."""
        recipe = yaml.safe_load(self.recipe_file.read_text()) or {}
        if not isinstance(recipe, dict):
            raise ValueError(f"{self.recipe_file}: not a recipe mapping")
        return recipe

    def artifact(self, stage: str, metrics: dict | None = None) -> Path | None:
        """The stage's artifact folder: the path status.json records when it still exists, else the
        cache entry of the stage's fingerprint (from status.json or ``metrics``) in ``self.cache``."""
        status = self.read_status(strict=False).get(stage) or {}
        recorded = status.get("artifact")
        if recorded and Path(recorded).is_dir():
            return Path(recorded)
        fingerprint = ((((metrics or {}).get("stages") or {}).get(stage) or {}).get("fingerprint")
                       or status.get("fingerprint"))
        if fingerprint:
            return (self.cache or Cache()).lookup(stage, fingerprint)
        return None

    def artifacts(self) -> dict[str, Path]:
        """Every artifact status.json records, by stage (unreadable status: none)."""
        return {stage: Path(entry["artifact"]) for stage, entry in self.read_status().items()
                if entry.get("artifact")}

    # -- writing --------------------------------------------------------------------------------
    def write_status(self, data: dict[str, dict]) -> None:
        atomic_write_json(self.status_file, data)

    def write_metrics(self, metrics: dict) -> None:
        atomic_write_json(self.metrics_file, metrics, sort_keys=False)  # stages in pipeline order

    def write_env(self, info: dict) -> None:
        atomic_write_json(self.env_file, info)

    def write_inputs(self, loaded: Any, recipe: dict) -> None:
        """Recipe as given (with its base chain), resolved recipe (secrets redacted) and overrides."""
        given = self.path / GIVEN_RECIPE
        given.mkdir(parents=True, exist_ok=True)
        for index, file in enumerate(getattr(loaded, "files", []) or []):
            file = Path(file)
            if file.is_file():
                shutil.copyfile(file, given / f"{index:02d}-{file.name}")
        redacted = loaded.redacted(recipe) if hasattr(loaded, "redacted") else recipe  # no ${oc.env:...} values
        atomic_write_text(self.recipe_file, yaml.safe_dump(redacted, sort_keys=False))
        atomic_write_json(self.path / OVERRIDES, list(getattr(loaded, "overrides", []) or []))
