"""What ``rac plan`` shows, computed without heavy work: stages, cache hits, scopes, model facts, estimates.

Nothing here loads weights, converts a GGUF or writes to the cache. What cannot be resolved on this
machine (a hub id offline, vLLM not installed) becomes one line in ``notes`` and the rest is still
shown: stages and reads always, cache hits only when the model identity is known, shapes from rac's
table of known configs when the hub is unreachable.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rac.pipeline.cache import Cache
from rac.pipeline.plan import Plan, build_plan
from rac.workflow.estimate import StageEstimate, estimate_stages, fmt_bytes

UNRESOLVED = "<unresolved>"


@dataclass
class Preview:
    """A plan plus what it needs and costs; ``identity_known`` False = cache hits are unknown."""

    plan: Plan
    identity_known: bool
    facts: Any  # ModelFacts | None
    estimates: list[StageEstimate]
    scope_rows: list[tuple[str, str]]
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def scope_rows(recipe: dict, n_blocks: int | None) -> list[tuple[str, str]]:
    """Per block range: which modules each scope selects (equal neighbouring blocks merged)."""
    if not recipe.get("prune"):
        return []
    from rac.recipe.scopes import assign_scopes

    if not n_blocks:
        return [("?", "model depth unknown here")]
    n = n_blocks
    assignment = assign_scopes(recipe["prune"], n)
    by_block: dict[int, dict[str, list[str]]] = {}
    for (block, module), spec in sorted(assignment.items()):
        target = f"{spec.pattern[0]}:{spec.pattern[1]}" if spec.pattern else f"{spec.sparsity:.0%}"
        by_block.setdefault(block, {}).setdefault(f"{spec.scope} ({spec.method}, {target})", []).append(module)

    def describe(block: int) -> str:
        if block not in by_block:
            return "dense"
        return "; ".join(f"{scope}: {', '.join(mods)}" for scope, mods in by_block[block].items())

    rows: list[tuple[str, str]] = []
    if -1 in by_block:
        rows.append(("head/embed", describe(-1)))
    start = 0
    for block in range(1, n + 1):
        if block == n or describe(block) != describe(start):
            rows.append((str(start) if block - 1 == start else f"{start}-{block - 1}", describe(start)))
            start = block
    return rows


def _identity(spec: dict, notes: list[str]) -> str | None:
    from rac.models.facts import FactsUnavailable, plan_identity

    try:
        return plan_identity(spec)
    except FactsUnavailable as exc:
        notes.append(f"{exc}: cache hits unknown")
        return None


def _facts(spec: dict, notes: list[str], what: str) -> Any:
    from rac.models.facts import FactsUnavailable, model_facts

    try:
        facts = model_facts(spec)
    except FactsUnavailable as exc:
        notes.append(f"{what} shapes unknown ({exc}): memory and Hessian sizes not estimated")
        return None
    if facts.from_table:
        notes.append(f"{what} config not readable here: shapes from {facts.source}")
    return facts


def dataset_sizes(recipe: dict) -> dict[str, int]:
    """Records of each builtin data set an evaluation task reads (small bundled files)."""
    from rac.calibration.datasets import BUILTIN_DATASETS, load_records

    out: dict[str, int] = {}
    for task in (recipe.get("evaluate") or {}).get("tasks") or []:
        name = task.get("dataset")
        if isinstance(name, str) and name in BUILTIN_DATASETS and name not in out:
            out[name] = len(load_records({"dataset": name}))
        elif name == "livecodebench" and not task.get("path"):  # hub release: its published size
            from rac.eval.livecodebench import release_problems

            size = release_problems(str(task.get("release") or "release_v5"))
            if size is not None:
                out[name] = size
    return out


def environment_notes(loaded: Any) -> list[str]:
    """What this machine lacks for the recipe (e.g. vLLM), one line; empty when nothing."""
    from rac.recipe.checks import ENVIRONMENT_CHECKS

    issues = [issue for check in ENVIRONMENT_CHECKS for issue in check(loaded, None)]
    if not issues:
        return []
    paths = ", ".join(issue.path.lstrip("$.") for issue in issues)
    return [f"not available here: {issues[0].message.split(':')[0]} ({paths}); plan only"]


def preview_recipe(loaded: Any, cache: Cache | None = None, stages: Any = None) -> Preview:
    """Plan, scope table, model facts and per-stage estimates of a validated recipe."""
    from rac.app import load_stages

    recipe = loaded.data
    notes = environment_notes(loaded)
    identity = _identity(recipe["model"], notes)
    extra: dict[str, str] = {}
    source = ((recipe.get("calibration") or {}).get("rollout") or {}).get("model")
    rollout_facts = None
    if source and (recipe.get("calibration") or {}).get("kind") == "rac":
        source_identity = _identity(source, notes)
        extra["rollout"] = source_identity or UNRESOLVED
        rollout_facts = _facts(source, notes, "rollout model")
    facts = _facts(recipe["model"], notes, "model")
    if facts is not None and recipe.get("prune"):
        from rac.recipe.checks import check_prune
        from rac.recipe.errors import RecipeError

        issues = check_prune(loaded, facts.n_blocks)
        if issues:
            raise RecipeError(issues)
    stage_list = stages or load_stages()
    plan = build_plan(recipe, cache or Cache(), identity or UNRESOLVED, stage_list, extra, persist_hashes=False)
    known = identity is not None and extra.get("rollout") != UNRESOLVED
    if not known:
        for planned in plan:
            planned.hit = False
    estimates = estimate_stages(recipe, plan.names, facts, rollout_facts, dataset_sizes(recipe))
    rows = scope_rows(recipe, facts.n_blocks if facts else None)
    warnings = capacity_warnings(estimates, (cache or Cache()).root, recipe)
    return Preview(plan, known, facts, estimates, rows, notes, warnings)


def capacity_warnings(estimates: list[StageEstimate], cache_root: Path, recipe: dict) -> list[str]:
    """Stages that will not fit this machine: cache disk beyond the free space, memory beyond the GPU."""
    out: list[str] = []
    disk = sum(e.disk or 0 for e in estimates if e.stage != "export")
    probe = Path(cache_root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if disk > free:
        out.append(f"the run writes about {fmt_bytes(disk)} to the cache ({cache_root}) but only "
                   f"{fmt_bytes(free)} is free there")
    device = str((recipe.get("run") or {}).get("device") or "auto")
    if device.startswith("cuda") or device == "auto":
        import torch

        if torch.cuda.is_available():
            index = int(device.split(":")[1]) if ":" in device else 0
            total = torch.cuda.get_device_properties(index).total_memory
            for item in estimates:
                if item.memory is not None and item.memory > total:
                    out.append(f"stage {item.stage} needs about {fmt_bytes(item.memory)} of accelerator memory; "
                               f"this GPU has {fmt_bytes(total)}")
    return out


@dataclass
class CellPreview:
    """One grid cell for ``rac grid --dry-run``: what differs from the base recipe, and its cache state."""

    name: str
    overrides: tuple[str, ...]
    changes: list  # rac.recipe.diff.RecipeChange, base -> cell
    hits: dict[str, str] | None  # stage -> hit | miss | run dir; None = model identity unknown here


def grid_preview(cells: list, base: Any, cache: Cache | None = None, stages: Any = None) -> tuple[list[CellPreview], list[str]]:
    """Every cell's resolved differences from ``base`` and its per-stage cache state, plus notes.

    Model identities are resolved once per distinct model (hub ids offline: cache state unknown).
    """
    from rac.app import load_stages
    from rac.models.facts import FactsUnavailable, plan_identity
    from rac.recipe.diff import diff_recipes

    cache = cache or Cache()
    stage_list = stages or load_stages()
    known: dict[str, str | None] = {}
    notes: list[str] = []

    def identity(spec: dict | None) -> str | None:
        key = repr(sorted((spec or {}).items()))
        if key not in known:
            try:
                known[key] = plan_identity(spec or {})
            except FactsUnavailable as exc:
                known[key] = None
                notes.append(f"{exc}: cache hits unknown")
        return known[key]

    out = []
    for cell in cells:
        recipe = cell.loaded.data
        target = identity(recipe["model"])
        extra: dict[str, str] = {}
        source = ((recipe.get("calibration") or {}).get("rollout") or {}).get("model")
        ok = target is not None
        if source and (recipe.get("calibration") or {}).get("kind") == "rac":
            source_identity = identity(source)
            ok = ok and source_identity is not None
            extra["rollout"] = source_identity or UNRESOLVED
        hits = None
        if ok:
            plan = build_plan(recipe, cache, target or UNRESOLVED, stage_list, extra, persist_hashes=False)
            hits = {p.name: ("hit" if p.hit else ("run dir" if not p.stage.cached else "miss")) for p in plan}
        out.append(CellPreview(cell.name, tuple(map(str, cell.overrides)), diff_recipes(base.data, recipe), hits))
    return out, notes
