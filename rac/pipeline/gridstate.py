"""Where a grid stands: each cell's state from its run directory, and the shared stages to run first.

A cell's state comes from the ``status.json`` its run wrote (per stage: done/cached/failed/running/
pending, with the stage fingerprint) checked against the cell's current plan, so an edited recipe
or an emptied cache shows as pending again. Shared stages are those whose fingerprint appears in two
or more cells (rollouts, the first Hessians): a cluster grid runs each of them once, in a prefix job,
before the cells fan out.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rac.pipeline.plan import Plan

FAILED = ("failed", "interrupted")
FINISHED = ("done", "cached")


@dataclass(frozen=True)
class CellState:
    """A cell's overall state and each planned stage's state (``name: state``)."""

    name: str
    state: str  # done, partial, running, failed, pending
    stages: tuple[tuple[str, str], ...]
    run_dir: Path


def read_status(run_dir: Path) -> dict:
    """The run directory's status.json, or {} when absent or unreadable (a run that never started)."""
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def cell_state(name: str, plan: Plan, run_dir: Path) -> CellState:
    """Stage states recorded for the current fingerprints; ``done`` needs every artifact still present."""
    status = read_status(run_dir)
    stages: list[tuple[str, str]] = []
    for planned in plan:
        record = status.get(planned.name) or {}
        state = str(record.get("status", "pending")) if record.get("fingerprint") == planned.fingerprint \
            else "pending"
        if state in FINISHED and planned.stage.cached and not planned.hit:
            state = "pending"  # the artifact left the cache since
        if state in FINISHED and not planned.stage.cached and not (run_dir / "artifacts" / planned.name).is_dir():
            state = "pending"
        stages.append((planned.name, state))
    states = [s for _, s in stages]
    if any(s in FAILED for s in states):
        overall = "failed"
    elif "running" in states:
        overall = "running"
    elif all(s in FINISHED for s in states) and (run_dir / "metrics.json").is_file():
        overall = "done"
    elif any(s in FINISHED for s in states):
        overall = "partial"
    else:
        overall = "pending"
    return CellState(name, overall, tuple(stages), run_dir)


@dataclass(frozen=True)
class PrefixJob:
    """Run cell ``cell`` (an index) up to and including stage ``stop_after``: shared work, done once."""

    cell: int
    stop_after: str
    fingerprint: str


def shared_prefix_waves(plans: Sequence[Plan]) -> list[list[PrefixJob]]:
    """Waves of prefix jobs covering every shared, not yet cached stage exactly once.

    A cell's shared prefix is its leading run of cached stages that are either already in the cache
    or planned by another cell too. A job computes only stages no earlier job claimed; it goes one
    wave after the jobs whose stages it reuses, so no stage is ever computed twice at once.
    """
    counts = Counter((s.name, s.fingerprint) for plan in plans for s in plan)
    claimed: dict[tuple[str, str], int] = {}
    waves: list[list[PrefixJob]] = []
    for index, plan in enumerate(plans):
        prefix = []
        for planned in plan:
            key = (planned.name, planned.fingerprint)
            if not planned.stage.cached or not (planned.hit or counts[key] >= 2):
                break
            prefix.append(planned)
        todo = [(p.name, p.fingerprint) for p in prefix if not p.hit]
        new = [key for key in todo if key not in claimed]
        if not new:
            continue
        wave = 1 + max((claimed[key] for key in todo if key in claimed), default=-1)
        while len(waves) <= wave:
            waves.append([])
        last = prefix[-1]
        waves[wave].append(PrefixJob(index, last.name, last.fingerprint))
        claimed.update({key: wave for key in new})
    return waves
