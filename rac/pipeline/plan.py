"""Compile a resolved recipe into an ordered plan of stages with content fingerprints.

A stage's fingerprint hashes its inputs: exactly what it reads from the recipe, the content of the
data sources among those reads, the source of the code it runs, the fingerprints of the stages it
needs, the model identity, its manual version salt and, for timing stages, the device kind (see
``rac.pipeline.inputs``). It changes exactly when one of those changes, so a grid cell that differs
only in (say) sparsity shares its rollout artifact. The inputs are stored in each artifact's
manifest, and a miss is explained by diffing them against the stage's most recent cached entry.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rac.hashing import canonical_json, json_digest
from rac.pipeline import inputs as fp_inputs
from rac.pipeline.cache import MANIFEST, Cache
from rac.pipeline.stage import Stage

MISSING = "<unset>"


def read_key(recipe: dict, dotted: str) -> Any:
    """The value at a dotted recipe key, or MISSING when any part is absent or null."""
    node: Any = recipe
    for part in dotted.split("."):
        if not isinstance(node, dict) or node.get(part) is None:
            return MISSING
        node = node[part]
    return node


def fingerprint_of(inputs: dict[str, Any]) -> str:
    """sha256 prefix of a stage's canonical inputs."""
    return json_digest(inputs, 32, compact=True)


def fingerprint(stage: Stage, reads: dict[str, Any], upstream: dict[str, str], model_identity: str) -> str:
    """Fingerprint of recipe reads, upstream fingerprints and model identity alone (no code / data / device)."""
    return fingerprint_of({"stage": stage.name, "version": stage.version, "reads": reads, "upstream": upstream,
                           "model": model_identity})


@dataclass(frozen=True)
class InputChange:
    """One fingerprint input that differs from the stage's most recent cached entry."""

    key: str  # e.g. "reads.run.seed", "data.calibration.sources[0]", "code.rac/algorithms/hessian.py"
    old: Any
    new: Any


@dataclass
class PlannedStage:
    stage: Stage
    fingerprint: str
    reads: dict[str, Any]
    needs: tuple[str, ...]
    hit: bool
    artifact: Path | None
    inputs: dict[str, Any] = field(default_factory=dict)
    why: list[InputChange] | None = None  # on a miss: what changed since the newest cached entry ([] = none cached)

    @property
    def name(self) -> str:
        return self.stage.name


@dataclass
class Plan:
    stages: list[PlannedStage] = field(default_factory=list)
    model_identity: str = ""
    warnings: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter(self.stages)

    def get(self, name: str) -> PlannedStage | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.stages]


def stage_inputs(stage: Stage, reads: dict[str, Any], upstream: dict[str, str], model_identity: str,
                 recipe: dict, hashes: fp_inputs.FileHashes,
                 resolver: Callable[[str], str | None]) -> tuple[dict[str, Any], list[str]]:
    """Everything a stage's fingerprint hashes, as a JSON-able dict, plus warnings about it."""
    data, warnings = fp_inputs.data_inputs(reads, hashes, resolver)
    inputs: dict[str, Any] = {
        "stage": stage.name,
        "version": stage.version,
        "code": fp_inputs.code_inputs(stage.run.__module__, hashes),
        "reads": reads,
        "data": data,
        "upstream": upstream,
        "model": model_identity,
    }
    if stage.device_dependent:
        inputs["device"] = fp_inputs.device_kind(str(read_key(recipe, "run.device")).replace(MISSING, "auto"))
    return inputs, warnings


def build_plan(
    recipe: dict,
    cache: Cache,
    model_identity: str,
    stages: Sequence[Stage],
    extra_identity: dict[str, str] | None = None,
    resolver: Callable[[str], str | None] | None = None,
    persist_hashes: bool = True,
) -> Plan:
    """Ordered plan of the enabled stages; a stage's needs are limited to enabled upstream stages.

    ``extra_identity`` adds per-stage identities beyond the target model (e.g. the off-policy
    rollout model's identity for the rollout stage). ``resolver`` maps a hub data set name to its
    current revision (default: ``huggingface_hub``; None when it cannot be resolved).
    ``persist_hashes=False`` (``rac plan``, dry runs) keeps the file-hash memo in memory only, so
    planning writes nothing to the cache.
    """
    plan = Plan(model_identity=model_identity)
    hashes = fp_inputs.FileHashes(cache.root / fp_inputs.HASHES_FILE)
    resolver = resolver or fp_inputs.resolve_hub_revision
    by_name: dict[str, PlannedStage] = {}
    warned: dict[str, list[str]] = {}  # warning -> stages it concerns
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
        inputs, warnings = stage_inputs(stage, reads, upstream, model_identity, recipe, hashes, resolver)
        for warning in warnings:
            warned.setdefault(warning, []).append(stage.name)
        fp = fingerprint_of(inputs)
        artifact = cache.artifact_path(stage.name, fp)
        hit = stage.cached and cache.exists(stage.name, fp)
        planned = PlannedStage(stage, fp, reads, needs, hit, artifact if stage.cached else None, inputs)
        if stage.cached and not hit:
            planned.why = miss_reason(cache, stage.name, inputs)
        by_name[stage.name] = planned
        plan.stages.append(planned)
    if persist_hashes:
        hashes.save()
    plan.warnings = [f"{warning} (stages: {', '.join(names)})" for warning, names in warned.items()]
    return plan


def latest_inputs(cache: Cache, stage: str) -> dict[str, Any] | None:
    """The stored fingerprint inputs of the stage's most recently created cache entry (None if none)."""
    best: tuple[float, dict] | None = None
    for manifest in (cache.root / "artifacts" / stage).glob(f"*/{MANIFEST}"):
        try:
            data = json.loads(manifest.read_text())
            created, stored = float(data.get("created", 0.0)), data["meta"]["inputs"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(stored, dict) and (best is None or created > best[0]):
            best = (created, stored)
    return best[1] if best else None


def _flatten(value: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(item, f"{prefix}.{key}" if prefix else str(key), out)
    else:
        out[prefix] = value
    return out


def diff_inputs(old: dict[str, Any], new: dict[str, Any]) -> list[InputChange]:
    """Leaf-by-leaf difference of two stage input dicts (absent leaves shown as MISSING)."""
    a, b = _flatten(json.loads(canonical_json(old)), "", {}), _flatten(json.loads(canonical_json(new)), "", {})
    return [InputChange(key, a.get(key, MISSING), b.get(key, MISSING))
            for key in sorted(set(a) | set(b)) if a.get(key, MISSING) != b.get(key, MISSING)]


def miss_reason(cache: Cache, stage: str, inputs: dict[str, Any]) -> list[InputChange]:
    """What changed since the stage's newest cached entry; [] when the cache has none with inputs."""
    previous = latest_inputs(cache, stage)
    return [] if previous is None else diff_inputs(previous, inputs)


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
