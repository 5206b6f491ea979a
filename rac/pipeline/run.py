"""Execute a plan: run directories, per-stage status, resume, metrics.json.

The run directory's layout is :class:`rac.pipeline.rundir.RunDir`'s. Stage artifacts live in the
content-addressed cache, so rerunning an interrupted run skips every stage that completed and
recomputes only the rest. What is rac-specific (the stages, the model identity, device resolution,
the process group, env.json's facts) comes in as arguments and a :class:`Runtime`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rac
from rac.errors import UsageError
from rac.hashing import recipe_hash
from rac.pipeline.cache import Cache, atomic_write_json
from rac.pipeline.plan import Plan, PlannedStage, build_plan
from rac.pipeline.rundir import RunDir
from rac.pipeline.runtime import OneProcess, Ranks, Runtime
from rac.pipeline.stage import NullProgress, ProgressReporter, Stage, StageContext

log = logging.getLogger("rac.run")
SUMMARY_FILE = "_summary.json"


@dataclass
class RunResult:
    run_dir: Path
    plan: Plan
    metrics: dict


class StageFailed(RuntimeError):
    """A stage raised; the run directory's status.json, metrics.json and run.log say which and why.

    ``records`` holds the per-stage records up to and including the failed stage; ``result`` is the
    partial :class:`RunResult` (metrics of the completed stages) once ``run_recipe`` has written it.
    """

    def __init__(self, stage: str, run_dir: Path, cause: BaseException, records: dict | None = None) -> None:
        super().__init__(f"stage {stage!r} failed: {cause} (see {run_dir / 'run.log'})")
        self.stage = stage
        self.run_dir = run_dir
        self.cause = cause
        self.records: dict[str, dict] = records or {}
        self.result: RunResult | None = None


def metrics_schema_errors(metrics: dict) -> list[str]:
    """Messages for every way ``metrics`` violates the installed metrics schema (empty = valid)."""
    from jsonschema import Draft202012Validator

    schema_path = Path(rac.__file__).parent / "schemas" / "metrics.schema.json"
    schema = json.loads(schema_path.read_text())
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in Draft202012Validator(schema).iter_errors(metrics)]


def default_run_dir(recipe: dict, name_hint: str) -> Path:
    run_cfg = recipe.get("run") or {}
    name = run_cfg.get("name") or name_hint
    output_dir = Path(run_cfg.get("output_dir") or "runs")
    run_dir = output_dir / f"{name}-{recipe_hash(recipe)}"
    if run_dir.resolve().parent != output_dir.resolve():
        raise UsageError(f"run.name {name!r}: the run directory must be a folder directly inside {output_dir}")
    return run_dir


class _Status:
    """Per-stage status file, rewritten atomically after every transition (by the writing rank only)."""

    def __init__(self, run: RunDir, plan: Plan, write: bool = True) -> None:
        self.run = run
        self.write = write
        previous = run.read_status()
        self.data: dict[str, dict] = {}
        for planned in plan:
            old = previous.get(planned.name, {})
            self.data[planned.name] = {
                "status": "pending",
                "fingerprint": planned.fingerprint,
                "attempts": old.get("attempts", 0) if old.get("fingerprint") == planned.fingerprint else 0,
            }
        self.save()

    def set(self, stage: str, **fields: Any) -> None:
        self.data[stage].update(fields)
        self.save()

    def save(self) -> None:
        if self.write:
            self.run.write_status(self.data)


def write_run_inputs(run_dir: Path, loaded: Any, recipe: dict) -> None:
    """Recipe as given (with its base chain), resolved recipe and overrides."""
    RunDir(run_dir).write_inputs(loaded, recipe)


def _attach_log(run: RunDir, ranks: Ranks) -> logging.Handler:
    """run.log in the run dir (torchrun ranks other than 0: ranks/rank<N>.log)."""
    path = run.log_file if ranks.is_owner() else run.rank_log_file(ranks.rank())
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("rac")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler


def execute_plan(
    plan: Plan,
    recipe: dict,
    cache: Cache,
    run_dir: Path,
    device: str,
    progress: ProgressReporter | None = None,
    on_stage: Callable[[str, str, PlannedStage], None] | None = None,
    ranks: Ranks | None = None,
) -> dict[str, dict]:
    """Run every stage the cache lacks, in order; returns per-stage records for metrics.json.

    Stages see ``plan.model_identity`` as ``ctx.model_identity``. In a process group (``ranks``, e.g.
    torchrun's) every rank walks the same plan: ``distributed`` stages run on every rank (rank 0
    seals the artifact), the others on rank 0 alone, and all ranks agree after each stage before
    reading its artifact; only rank 0 writes the run dir."""
    dist = ranks or OneProcess()
    progress = progress or NullProgress()
    many, owner = dist.active(), dist.is_owner()
    run = RunDir(run_dir, cache)
    status = _Status(run, plan, write=owner)
    records: dict[str, dict] = {}
    artifacts: dict[str, Path] = {}
    for planned in plan:
        stage = planned.stage
        inputs = {name: artifacts[name] for name in planned.needs if name in artifacts}
        hit_path = cache.lookup(stage.name, planned.fingerprint) if stage.cached else None
        if many and not dist.agree(hit_path is not None):
            hit_path = None
        if hit_path is not None:
            summary = _read_summary(hit_path)
            artifacts[stage.name] = hit_path
            records[stage.name] = {"status": "cached", "fingerprint": planned.fingerprint, "cache_hit": True,
                                   "seconds": summary.get("_seconds", 0.0), "summary": summary.get("summary", {})}
            status.set(stage.name, status="cached", artifact=str(hit_path))
            log.info("stage %s: cache hit %s", stage.name, planned.fingerprint)
            if on_stage:
                on_stage(stage.name, "cached", planned)
            continue
        if on_stage:
            on_stage(stage.name, "running", planned)
        status.set(stage.name, status="running", attempts=status.data[stage.name]["attempts"] + 1,
                   started=time.time())
        log.info("stage %s: running (fingerprint %s)", stage.name, planned.fingerprint)
        start = time.perf_counter()
        try:
            if many and stage.distributed:
                final: Path | None = _run_distributed(planned, recipe, cache, run_dir, device, inputs, progress,
                                                      plan.model_identity, dist)
            elif many and not owner:
                final = None  # rank 0 runs it; this rank reads its artifact after the agreement below
            else:
                final = _run_one(planned, recipe, cache, run_dir, device, inputs, progress, plan.model_identity)
        except BaseException as exc:
            if many and not stage.distributed:
                dist.agree(False)  # the other ranks wait for this stage: tell them it failed
            state = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            error = f"{type(exc).__name__}: {exc}"
            status.set(stage.name, status=state, error=error)
            log.exception("stage %s failed", stage.name)
            records[stage.name] = {"status": state, "fingerprint": planned.fingerprint, "cache_hit": False,
                                   "seconds": round(time.perf_counter() - start, 3), "summary": {}, "error": error}
            for later in plan.stages[plan.stages.index(planned) + 1:]:
                records[later.name] = {"status": "skipped", "fingerprint": later.fingerprint, "cache_hit": False,
                                       "seconds": 0.0, "summary": {}}
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise StageFailed(stage.name, run_dir, exc, records) from exc
        if many:
            if not dist.agree(True):
                raise StageFailed(stage.name, run_dir, RuntimeError(f"stage {stage.name!r} failed on another rank"),
                                  records)
            if final is None:
                final = cache.lookup(stage.name, planned.fingerprint) if stage.cached else \
                    run.local_artifact(stage.name)
        if final is None:
            raise StageFailed(stage.name, run_dir, RuntimeError("rank 0's artifact is not in the cache"), records)
        seconds = time.perf_counter() - start
        artifacts[stage.name] = final
        summary = _read_summary(final)
        records[stage.name] = {"status": "done", "fingerprint": planned.fingerprint, "cache_hit": False,
                               "seconds": round(seconds, 3), "summary": summary.get("summary", {})}
        status.set(stage.name, status="done", seconds=round(seconds, 3), artifact=str(final))
        log.info("stage %s: done in %.1fs", stage.name, seconds)
        if on_stage:
            on_stage(stage.name, "done", planned)
    return records


def _context(stage: Stage, out_dir: Path, recipe: dict, cache: Cache, run_dir: Path, device: str,
             inputs: dict[str, Path], progress: ProgressReporter, model_identity: str) -> StageContext:
    """What a stage run sees: its output folder, its inputs, the cache, device, model identity, progress."""
    return StageContext(recipe=recipe, out_dir=out_dir, inputs=inputs, cache=cache, device=device,
                        model_identity=model_identity, run_dir=run_dir,
                        progress=progress, log=logging.getLogger(f"rac.stages.{stage.name}"))


def _run_one(planned: PlannedStage, recipe: dict, cache: Cache, run_dir: Path, device: str,
             inputs: dict[str, Path], progress: ProgressReporter, model_identity: str) -> Path:
    stage = planned.stage

    def context(out_dir: Path) -> StageContext:
        return _context(stage, out_dir, recipe, cache, run_dir, device, inputs, progress, model_identity)

    start = time.perf_counter()
    if stage.cached:
        with cache.locked(stage.name, planned.fingerprint):  # one writer per fingerprint across runs
            reused = cache.lookup(stage.name, planned.fingerprint)
            if reused is not None:
                log.info("stage %s: computed by a concurrent run while waiting; reusing it", stage.name)
                return reused
            with cache.writing(stage.name, planned.fingerprint, {"reads": planned.reads, "inputs": planned.inputs}) as tmp:
                summary = stage.run(context(tmp))
                atomic_write_json(tmp / SUMMARY_FILE,
                                  {"summary": summary or {}, "_seconds": time.perf_counter() - start})
        return cache.artifact_path(stage.name, planned.fingerprint)
    final = RunDir(run_dir).local_artifact(stage.name)
    tmp = final.parent / f".{stage.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        summary = stage.run(context(tmp))
        # paths the stage reported point into the temp dir; report where they end up
        summary = json.loads(json.dumps(summary or {}, default=str).replace(str(tmp), str(final)))
        atomic_write_json(tmp / SUMMARY_FILE, {"summary": summary, "_seconds": time.perf_counter() - start})
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _run_distributed(planned: PlannedStage, recipe: dict, cache: Cache, run_dir: Path, device: str,
                     inputs: dict[str, Path], progress: ProgressReporter, model_identity: str,
                     dist: Ranks) -> Path:
    """A data-parallel stage on every rank: rank 0 computes into the cache under the lock, the
    others into a scratch folder (their collectives pair with rank 0's); a concurrent run's artifact,
    found by rank 0 under the lock, is reused by all."""
    import tempfile

    stage = planned.stage

    def context(out_dir: Path) -> StageContext:
        return _context(stage, out_dir, recipe, cache, run_dir, device, inputs, progress, model_identity)

    start = time.perf_counter()
    if not dist.is_owner():
        if dist.agree(True):
            with tempfile.TemporaryDirectory(prefix=f"rac-{stage.name}-rank{dist.rank()}-") as scratch:
                stage.run(context(Path(scratch)))
        return cache.artifact_path(stage.name, planned.fingerprint)
    with cache.locked(stage.name, planned.fingerprint):
        reused = cache.lookup(stage.name, planned.fingerprint)
        if not dist.agree(reused is None):
            return reused if reused is not None else cache.artifact_path(stage.name, planned.fingerprint)
        with cache.writing(stage.name, planned.fingerprint, {"reads": planned.reads, "inputs": planned.inputs}) as tmp:
            summary = stage.run(context(tmp))
            atomic_write_json(tmp / SUMMARY_FILE, {"summary": summary or {}, "_seconds": time.perf_counter() - start})
    return cache.artifact_path(stage.name, planned.fingerprint)


def _write_metrics(run_dir: Path, recipe: dict, loaded: Any, name_hint: str, device: str, started: float,
                   records: dict[str, dict], failure: dict | None = None, write: bool = True) -> dict:
    """metrics.json: per-stage records and the evaluate summary; ``status``/``failure`` say how it ended
    (``write``: False on torchrun ranks other than 0, which only return it)."""
    evaluate = records.get("evaluate") or {}
    metrics = {
        "rac_version": rac.__version__,
        "recipe": {"name": recipe.get("name") or name_hint, "path": str(getattr(loaded, "path", ""))},
        "run": {"dir": str(run_dir), "device": device, "started": started, "finished": time.time()},
        "status": "failed" if failure else "ok",
        "stages": records,
        "evaluate": evaluate.get("summary", {}) if evaluate.get("status") in ("done", "cached") else {},
    }
    if failure:
        metrics["failure"] = failure
    if write:
        RunDir(run_dir).write_metrics(metrics)
    for problem in metrics_schema_errors(metrics):
        log.warning("metrics.json does not match schemas/metrics.schema.json: %s", problem)
    return metrics


def _read_summary(path: Path) -> dict:
    file = path / SUMMARY_FILE
    try:
        return json.loads(file.read_text()) if file.is_file() else {}
    except ValueError:
        return {}


def run_recipe(
    loaded: Any,
    stages: Sequence[Stage],
    model_identity: str,
    cache: Cache | None = None,
    run_dir: Path | None = None,
    progress: ProgressReporter | None = None,
    on_stage: Callable[[str, str, PlannedStage], None] | None = None,
    extra_identity: dict[str, str] | None = None,
    runtime: Runtime | None = None,
) -> RunResult:
    """Plan and execute a loaded recipe; rerunning with the same recipe resumes in the same run dir.

    ``runtime`` resolves the device, names the process group and the env.json facts (default: one
    process on the CPU; ``rac.app`` passes rac's)."""
    recipe: dict = loaded.data
    runtime = runtime or Runtime()
    cache = cache or Cache()
    name_hint = Path(getattr(loaded, "path", "recipe") or "recipe").stem
    run_dir = Path(run_dir) if run_dir else default_run_dir(recipe, name_hint)
    run_dir.mkdir(parents=True, exist_ok=True)
    run = RunDir(run_dir, cache)
    device = runtime.device((recipe.get("run") or {}).get("device"))  # before any work; may join a group
    owner = runtime.ranks.is_owner()
    handler = _attach_log(run, runtime.ranks)
    try:
        if owner:
            run.write_inputs(loaded, recipe)
            run.write_env(runtime.environment(device))
        plan = build_plan(recipe, cache, model_identity, stages, extra_identity, persist_hashes=owner)
        started = time.time()
        try:
            records = execute_plan(plan, recipe, cache, run_dir, device, progress, on_stage, runtime.ranks)
        except StageFailed as exc:  # what the completed stages measured is kept, next to the failure
            metrics = _write_metrics(run_dir, recipe, loaded, name_hint, device, started, exc.records,
                                     failure={"stage": exc.stage, "error": f"{type(exc.cause).__name__}: {exc.cause}"},
                                     write=owner)
            exc.result = RunResult(run_dir, plan, metrics)
            raise
        metrics = _write_metrics(run_dir, recipe, loaded, name_hint, device, started, records, write=owner)
        return RunResult(run_dir, plan, metrics)
    finally:
        logging.getLogger("rac").removeHandler(handler)
        handler.close()
