"""Compile a resolved recipe into an ordered plan of stages with content fingerprints.

A stage's fingerprint hashes exactly what it reads from the recipe, the fingerprints of the stages
it needs, the model identity and the stage's code version — so it changes exactly when one of those
changes, and a grid cell that differs only in (say) sparsity shares its rollout artifact.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rac.engine.cache import Cache
from rac.engine.stage import Stage

MISSING = "<unset>"


def read_key(recipe: dict, dotted: str) -> Any:
    """The value at a dotted recipe key, or MISSING when any part is absent or null."""
    node: Any = recipe
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return MISSING
        node = node[part]
    return node


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def fingerprint(stage: Stage, reads: dict[str, Any], upstream: dict[str, str], model_identity: str) -> str:
    """sha256 over (stage name, code version, read values, upstream fingerprints, model identity)."""
    payload = {
        "stage": stage.name,
        "version": stage.version,
        "reads": reads,
        "upstream": upstream,
        "model": model_identity,
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()[:32]


@dataclass
class PlannedStage:
    stage: Stage
    fingerprint: str
    reads: dict[str, Any]
    needs: tuple[str, ...]
    hit: bool
    artifact: Path | None

    @property
    def name(self) -> str:
        return self.stage.name


@dataclass
class Plan:
    stages: list[PlannedStage] = field(default_factory=list)
    model_identity: str = ""

    def __iter__(self):
        return iter(self.stages)

    def get(self, name: str) -> PlannedStage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def build_plan(
    recipe: dict,
    cache: Cache,
    model_identity: str,
    stages: Sequence[Stage],
    extra_identity: dict[str, str] | None = None,
) -> Plan:
    """Ordered plan of the enabled stages; a stage's needs are limited to enabled upstream stages.

    ``extra_identity`` adds per-stage identities beyond the target model (e.g. the off-policy
    rollout model's identity for the rollout stage).
    """
    plan = Plan(model_identity=model_identity)
    by_name: dict[str, PlannedStage] = {}
    known = {s.name for s in stages}
    for stage in stages:
        unknown = [n for n in stage.needs if n not in known]
        if unknown:
            raise ValueError(f"stage {stage.name!r} needs unknown stages {unknown}")
        if not stage.enabled(recipe):
            continue
        needs = tuple(n for n in stage.needs if n in by_name)
        reads = {key: read_key(recipe, key) for key in stage.reads}
        if extra_identity and stage.name in extra_identity:
            reads["<identity>"] = extra_identity[stage.name]
        upstream = {n: by_name[n].fingerprint for n in needs}
        fp = fingerprint(stage, reads, upstream, model_identity)
        artifact = cache.artifact_path(stage.name, fp)
        hit = stage.cached and cache.exists(stage.name, fp)
        planned = PlannedStage(stage, fp, reads, needs, hit, artifact if stage.cached else None)
        by_name[stage.name] = planned
        plan.stages.append(planned)
    return plan


def invalidated_stages(stages: Sequence[Stage], recipe: dict, changed_paths: Sequence[str]) -> list[str]:
    """Stages whose artifacts a change of ``changed_paths`` (dotted) invalidates, directly or upstream."""
    def touches(read: str, changed: str) -> bool:
        return changed == read or changed.startswith(read + ".") or changed.startswith(read + "[") \
            or read.startswith(changed + ".")

    dirty: set[str] = set()
    for stage in stages:
        direct = any(touches(r, c) for r in stage.reads for c in changed_paths)
        inherited = any(n in dirty for n in stage.needs)
        if direct or inherited:
            dirty.add(stage.name)
    return [s.name for s in stages if s.name in dirty]
