"""The Python API for notebooks and schedulers: ``rac.run(recipe, overrides=..., cache=...)``.

It does exactly what ``rac run`` does (load, validate, plan, run every missing stage, write the run
directory) without rendering anything, and returns where everything landed. Errors are the same
typed errors the CLI turns into messages: ``RecipeError`` for a bad recipe (file:line:col),
``StageFailed`` for a stage that raised.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

PathLike = str | os.PathLike[str]


@dataclass(frozen=True)
class RunOutput:
    """What one run produced: its directory, metrics.json as a dict, and each stage's artifact folder."""

    run_dir: Path
    metrics: dict
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def export_dir(self) -> Path | None:
        """The exported model folder (``export.path``), when the recipe exports."""
        summary = (self.metrics.get("stages", {}).get("export") or {}).get("summary") or {}
        path = summary.get("path")
        return Path(path) if path else None

    @property
    def evaluation(self) -> dict:
        """Per-task evaluation metrics ({task: {metric: value}})."""
        return dict(self.metrics.get("evaluate") or {})


def _recipe_file(recipe: Mapping[str, Any], folder: Path) -> Path:
    """Write an in-memory recipe to a file so the loader can locate errors; relative ``base`` from the cwd."""
    data = dict(recipe)
    base = data.get("base")
    if isinstance(base, str) and not Path(base).is_absolute():
        data["base"] = str(Path.cwd() / base)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def run(
    recipe: PathLike | Mapping[str, Any],
    overrides: Sequence[str] = (),
    cache: PathLike | None = None,
    run_dir: PathLike | None = None,
    overlays: Sequence[PathLike] = (),
) -> RunOutput:
    """Run a recipe (a YAML path or a dict) with Hydra-style ``overrides`` and optional ``overlays``.

    ``cache`` is the artifact cache root (default ``$RAC_CACHE`` or ``~/.cache/rac``); ``run_dir``
    the run directory (default ``<run.output_dir>/<name>-<hash>``). Rerunning resumes: completed
    stages are cache hits.
    """
    from rac.app import run_loaded
    from rac.pipeline.cache import Cache
    from rac.pipeline.rundir import RunDir
    from rac.recipe.validate import load_and_validate

    with tempfile.TemporaryDirectory(prefix="rac-api-") as tmp:
        path = _recipe_file(recipe, Path(tmp)) if isinstance(recipe, Mapping) else Path(recipe)
        loaded = load_and_validate(path, list(overrides), list(overlays))
        result = run_loaded(loaded, Cache(None if cache is None else Path(cache)), Path(run_dir) if run_dir else None)
    return RunOutput(result.run_dir, result.metrics, RunDir(result.run_dir).artifacts())
