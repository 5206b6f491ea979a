"""What a recipe change costs: the stages it invalidates, and an estimate of re-running them.

Stages come from the stage contract (``reads``, ``needs``, ``enabled``): a stage re-runs when a
key it reads changed or a stage it needs re-runs, and only if the new recipe enables it. A stage
that neither recipe enables (``quantize`` without a ``quantize`` section) is never listed.

The estimate is deliberately simple, for a PR comment, not a schedule:

- rollout tokens (generated): ``calibration.budget.tokens`` (the kept traces fill the token
  budget; the stage over-samples a little and drops whole traces), or, for a prompt budget,
  ``prompts * samples_per_prompt * t_max / 2`` (the rollout stage's own assumption that a trace
  uses half of ``t_max``).
- evaluation tokens (an upper bound): per task ``items * samples * max_new_tokens``, items being
  the task's ``limit`` or the size of a bundled data set; tasks of unknown size make it unknown.
- GPU-hours, only for recipes that run on CUDA and name the model size in the model id
  (``...-7B``): tokens / (``DECODE_TOK_S_7B * 7 / billions``) / 3600, i.e. an assumed batched vLLM
  decode throughput of one H100-class GPU for a 7B model, inversely proportional to model size.
  Hessian, pruning and export time are not counted (generation dominates at paper budgets).
"""

from __future__ import annotations

import gzip
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from rac.recipe.diff import RecipeChange, stage_path

DECODE_TOK_S_7B = 4000.0
_SIZE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")


@dataclass(frozen=True)
class StageInfo:
    name: str
    reads: tuple[str, ...]
    needs: tuple[str, ...]
    enabled: Any


@lru_cache(maxsize=1)
def stage_infos() -> tuple[StageInfo, ...]:
    """The stage contract (reads, needs, enabled) of every registered stage, in pipeline order."""
    from rac.app import load_stages

    return tuple(StageInfo(s.name, tuple(s.reads), tuple(s.needs), s.enabled) for s in load_stages())


def stage_names() -> list[str]:
    return [s.name for s in stage_infos()]


def _enabled(stage: StageInfo, recipe: dict | None) -> bool:
    if recipe is None:
        return False
    try:
        return bool(stage.enabled(recipe))
    except (KeyError, TypeError, AttributeError):
        return False


def _touches(read: str, changed: str) -> bool:
    return changed == read or changed.startswith((read + ".", read + "[")) or read.startswith(changed + ".")


@dataclass
class Impact:
    """Stages invalidated by a change (enabled on either side) and those the new recipe re-runs."""

    invalidated: list[str]
    rerun: list[str]


def impact(old: dict | None, new: dict | None, changes: Sequence[RecipeChange],
           stages: Sequence[StageInfo] | None = None) -> Impact:
    """Which stages a change invalidates. ``old`` None: a new recipe (every enabled stage runs)."""
    stages = stage_infos() if stages is None else stages
    paths = [stage_path(c.path) for c in changes]
    dirty: list[str] = []
    for stage in stages:
        on_old, on_new = _enabled(stage, old), _enabled(stage, new)
        if not (on_old or on_new):
            continue
        if (old is None or on_old != on_new or any(_touches(r, p) for r in stage.reads for p in paths)
                or any(n in dirty for n in stage.needs)):
            dirty.append(stage.name)
    rerun = [s.name for s in stages if s.name in dirty and _enabled(s, new)]
    return Impact(dirty, rerun)


def stage_signature(recipe: dict, name: str) -> str:
    """The recipe values a stage reads (for a stage without ``needs``, what its cache key depends on)."""
    import json

    from rac.recipe.source import split_path

    stage = next(s for s in stage_infos() if s.name == name)
    values = {}
    for read in stage.reads:
        node: Any = recipe
        for token in split_path(read):
            node = node.get(token) if isinstance(node, dict) else None
        values[read] = node
    return json.dumps(values, sort_keys=True, default=str)


@lru_cache(maxsize=None)
def _bundled_size(name: str) -> int | None:
    from rac.calibration.datasets import BUILTIN_DATASETS

    info = BUILTIN_DATASETS.get(name)
    if info is None or not info.path.is_file():
        return None
    with gzip.open(info.path, "rt", encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


def params_billion(model: dict | None) -> float | None:
    """Model size in billions of parameters as named in its id (``DeepSeek-R1-Distill-Qwen-14B`` -> 14)."""
    ident = str((model or {}).get("id") or "")
    sizes = [float(m) for m in _SIZE.findall(ident.rsplit("/", 1)[-1])]
    return sizes[-1] if sizes else None


def rollout_tokens(recipe: dict) -> int | None:
    """Tokens the rollout stage generates (see the module docstring)."""
    calib = recipe.get("calibration") or {}
    budget, rollout = calib.get("budget") or {}, calib.get("rollout") or {}
    if budget.get("tokens"):
        return int(budget["tokens"])
    if budget.get("prompts") and rollout.get("t_max"):
        return int(budget["prompts"] * int(rollout.get("samples_per_prompt") or 1) * rollout["t_max"] / 2)
    return None


def eval_tokens(recipe: dict) -> int | None:
    """Upper bound of the tokens evaluation generates (see the module docstring)."""
    evaluate = recipe.get("evaluate") or {}
    total = 0
    for task in evaluate.get("tasks") or []:
        if task.get("type") == "throughput":
            continue
        items = task.get("limit") or evaluate.get("limit")
        if not items and task.get("dataset") == "livecodebench" and not task.get("path"):
            from rac.eval.livecodebench import release_problems

            items = release_problems(str(task.get("release") or "release_v5"))
        elif not items and task.get("dataset"):
            size = _bundled_size(str(task["dataset"]))
            items = size
        if not items:
            return None
        budget = task.get("max_new_tokens") or task.get("t_max") or evaluate.get("max_new_tokens") or 0
        samples = task.get("samples") or evaluate.get("samples") or 1
        total += int(items) * int(samples) * int(budget)
    return total


def _on_gpu(recipe: dict) -> bool:
    return str((recipe.get("run") or {}).get("device", "")).startswith("cuda")


def gpu_hours(tokens: int, model: dict | None, recipe: dict) -> float | None:
    """GPU-hours to generate ``tokens`` with ``model`` (None when not on CUDA or the size is unknown)."""
    size = params_billion(model)
    if not _on_gpu(recipe) or not size:
        return None
    return tokens / (DECODE_TOK_S_7B * 7.0 / size) / 3600.0


@dataclass
class Cost:
    """Estimated cost of re-running some stages of one recipe."""

    rollout_tokens: int | None = None
    eval_tokens: int | None = None
    gpu_hours: float | None = None
    unknown: tuple[str, ...] = ()

    def __add__(self, other: Cost) -> Cost:
        def add(x: Any, y: Any) -> Any:
            return None if x is None and y is None else (x or 0) + (y or 0)

        return Cost(add(self.rollout_tokens, other.rollout_tokens), add(self.eval_tokens, other.eval_tokens),
                    add(self.gpu_hours, other.gpu_hours), tuple(dict.fromkeys(self.unknown + other.unknown)))


def rerun_cost(recipe: dict, stages: Sequence[str]) -> Cost:
    """The estimated cost of running ``stages`` of ``recipe``."""
    cost, unknown, hours = Cost(), [], 0.0
    if "rollout" in stages:
        cost.rollout_tokens = rollout_tokens(recipe)
        source = ((recipe.get("calibration") or {}).get("rollout") or {}).get("model") or recipe.get("model")
        h = gpu_hours(cost.rollout_tokens, source, recipe) if cost.rollout_tokens is not None else None
        unknown += [] if cost.rollout_tokens is not None else ["rollout tokens"]
        unknown += [] if h is not None or not _on_gpu(recipe) else ["rollout GPU-hours"]
        hours += h or 0.0
    if "evaluate" in stages:
        cost.eval_tokens = eval_tokens(recipe)
        h = gpu_hours(cost.eval_tokens, recipe.get("model"), recipe) if cost.eval_tokens is not None else None
        unknown += [] if cost.eval_tokens is not None else ["evaluation tokens"]
        unknown += [] if h is not None or not _on_gpu(recipe) else ["evaluation GPU-hours"]
        hours += h or 0.0
    cost.gpu_hours = hours if hours else None
    cost.unknown = tuple(unknown)
    return cost
