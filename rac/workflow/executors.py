"""Run grid cells on a cluster through existing engines: Ray tasks or Slurm jobs (submitit).

rac schedules nothing itself. The grid is planned up front; the shared stages (same fingerprint in
two or more cells: rollouts, the first Hessians) run once, as prefix jobs, before the fan-out; then
every cell not already done is one task/job with the resources its recipe needs, all writing to the
same cache (a shared filesystem path). ``submitit-local`` is submitit's LocalExecutor: the same job
path as Slurm, as local processes (tests, a workstation).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rac.errors import RacError, UsageError
from rac.pipeline.cache import Cache
from rac.pipeline.gridstate import CellState, cell_state, shared_prefix_waves
from rac.pipeline.rundir import RunDir

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray", "slurm", "submitit-local")


@dataclass(frozen=True)
class ExecutorOptions:
    """Where cells run: ``kind`` (one of EXECUTORS), the Ray address, submitit's parameters."""

    kind: str = "local"
    address: str | None = None
    cpus_per_cell: int = 1
    timeout_min: int = 24 * 60
    slurm: dict[str, Any] = field(default_factory=dict)  # submitit slurm_* parameters, without the prefix


@dataclass
class CellOutcome:
    name: str
    run_dir: Path
    metrics: dict | None
    error: str | None
    skipped: bool = False


def cell_resources(recipe: dict, cpus: int = 1, on_ray: bool = False) -> dict[str, int]:
    """GPUs and CPUs one cell needs: vLLM's tensor x data parallel size, else one GPU when run.device is cuda.

    ``on_ray``: the cell is a Ray task, and data-parallel replicas are Ray actors asking the cluster for
    their own GPUs, so the task itself holds none for them (it would starve them otherwise).
    """
    device = str((recipe.get("run") or {}).get("device") or "auto")
    gpus = 1 if device.startswith("cuda") else 0
    rollout = (recipe.get("calibration") or {}).get("rollout") or {}
    evaluate = recipe.get("evaluate") or {}
    for section in (rollout, evaluate):
        options = section.get("vllm") or {}
        replicas = int(options.get("data_parallel_size") or 1)
        on_gpu = (section.get("engine") == "vllm" and device != "cpu") or (replicas > 1 and device.startswith("cuda"))
        if on_gpu and not (on_ray and replicas > 1):
            gpus = max(gpus, int(options.get("tensor_parallel_size") or 1) * replicas)
    return {"gpus": gpus, "cpus": max(1, cpus)}


def run_cell_job(loaded: Any, cache_root: str, run_dir: str, stop_after: str | None = None,
                 cwd: str | None = None) -> dict:
    """What a task/job runs: the cell's pipeline (or its prefix up to ``stop_after``) into ``run_dir``.

    ``cwd``: the submitting directory, so relative paths in the recipe mean the same on the worker.
    """
    from rac.app import run_loaded
    from rac.pipeline.run import StageFailed

    if cwd:
        os.chdir(cwd)
    cache = Cache(cache_root)
    try:
        if stop_after is None:
            return {"metrics": run_loaded(loaded, cache, Path(run_dir)).metrics, "error": None}
        result = run_loaded(loaded, cache, Path(run_dir), stop_after=stop_after)
        RunDir(Path(run_dir)).metrics_file.unlink(missing_ok=True)  # a prefix is not a run for reports
        return {"metrics": result.metrics, "error": None}
    except StageFailed as exc:
        return {"metrics": None, "error": str(exc)}


Job = tuple[str, Any, Path, "str | None", dict]  # (label, loaded, run_dir, stop_after, resources)


def _run_ray(jobs: Sequence[Job], cache: Cache) -> list[dict]:
    import ray

    task = ray.remote(run_cell_job)
    refs = [task.options(num_cpus=res["cpus"], num_gpus=res["gpus"], name=f"rac-{label}")
            .remote(loaded, str(cache.root), str(run_dir), stop, os.getcwd())
            for label, loaded, run_dir, stop, res in jobs]
    results = []
    for ref in refs:
        try:
            results.append(ray.get(ref))
        except ray.exceptions.RayError as exc:
            results.append({"metrics": None, "error": f"ray task failed: {exc}"})
    return results


def _run_submitit(jobs: Sequence[Job], cache: Cache, options: ExecutorOptions, folder: Path) -> list[dict]:
    try:
        import submitit
    except ImportError as exc:
        raise UsageError(f"--executor {options.kind} needs submitit (pip install 'rac[ray]'): {exc}") from exc
    executor = submitit.AutoExecutor(folder=folder, cluster="local" if options.kind == "submitit-local" else "slurm")
    submitted = []
    for label, loaded, run_dir, stop, res in jobs:
        executor.update_parameters(name=f"rac-{label}", timeout_min=options.timeout_min,
                                   cpus_per_task=res["cpus"], gpus_per_node=res["gpus"],
                                   **{f"slurm_{key}": value for key, value in options.slurm.items()})
        submitted.append(executor.submit(run_cell_job, loaded, str(cache.root), str(run_dir), stop, os.getcwd()))
    results = []
    for job in submitted:
        try:
            results.append(job.result())
        except Exception as exc:  # submitit reports a failed or killed job as an exception with its log
            results.append({"metrics": None, "error": f"job {job.job_id} failed: {exc}"})
    return results


def _run_jobs(jobs: Sequence[Job], cache: Cache, options: ExecutorOptions, grid_dir: Path) -> list[dict]:
    if not jobs:
        return []
    if options.kind == "ray":
        return _run_ray(jobs, cache)
    if options.kind in ("slurm", "submitit-local"):
        return _run_submitit(jobs, cache, options, grid_dir / "submitit")
    if options.kind == "local":
        return [run_cell_job(loaded, str(cache.root), str(run_dir), stop) for _, loaded, run_dir, stop, _ in jobs]
    raise UsageError(f"unknown executor {options.kind!r}; choose one of {', '.join(EXECUTORS)}")


def grid_states(cells: Sequence[Any], grid_dir: Path, cache: Cache) -> list[CellState]:
    """Every cell's state from its run directory (``rac grid --status``)."""
    from rac.app import plan_recipe

    return [cell_state(cell.name, plan_recipe(cell.loaded.data, cache), grid_dir / cell.name) for cell in cells]


def finished_results(cells: Sequence[Any], grid_dir: Path, cache: Cache) -> dict[str, Any]:
    """{cell name: RunResult} of the cells whose run directory holds a finished run of their current
    recipe (every stage done for today's fingerprints, artifacts present): what ``rac grid --cell`` keeps in
    the grid summary for the cells it does not run."""
    from rac.app import plan_recipe
    from rac.pipeline.plan import Plan
    from rac.pipeline.run import RunResult

    out: dict[str, Any] = {}
    for cell in cells:
        run_dir = grid_dir / cell.name
        if not run_dir.is_dir():
            continue
        try:
            state = cell_state(cell.name, plan_recipe(cell.loaded.data, cache), run_dir)
        except RacError as exc:  # e.g. its model cannot be resolved here: not known to be finished
            log.warning("grid summary: cell %s left out (cannot plan it here: %s)", cell.name, exc)
            continue
        if state.state == "done":
            out[cell.name] = RunResult(run_dir, Plan(), json.loads((run_dir / "metrics.json").read_text()))
    return out


def run_grid_cells(cells: Sequence[Any], grid_dir: Path, cache: Cache, options: ExecutorOptions,
                   on_event: Callable[[str], None] = lambda text: None) -> list[CellOutcome]:
    """Shared prefixes first (wave by wave), then every cell that is not done, on ``options.kind``."""
    if options.kind not in EXECUTORS:
        raise UsageError(f"unknown executor {options.kind!r}; choose one of {', '.join(EXECUTORS)}")
    if options.kind != "ray":
        return _fan_out(cells, grid_dir, cache, options, on_event)
    from rac.engines.data_parallel import ensure_ray

    started = ensure_ray(options.address)  # one connection (or local cluster) for every wave
    try:
        return _fan_out(cells, grid_dir, cache, options, on_event)
    finally:
        if started:
            import ray

            ray.shutdown()


def _fan_out(cells: Sequence[Any], grid_dir: Path, cache: Cache, options: ExecutorOptions,
             on_event: Callable[[str], None]) -> list[CellOutcome]:
    from rac.app import plan_recipe

    plans = [plan_recipe(cell.loaded.data, cache) for cell in cells]
    states = [cell_state(cell.name, plan, grid_dir / cell.name) for cell, plan in zip(cells, plans)]
    todo = [i for i, state in enumerate(states) if state.state != "done"]
    for wave in shared_prefix_waves([plans[i] for i in todo]):
        jobs: list[Job] = []
        for job in wave:
            cell = cells[todo[job.cell]]
            label = f"shared-{job.stop_after}-{job.fingerprint[:8]}"
            on_event(f"shared stages up to {job.stop_after} ({job.fingerprint[:8]}) of cell {cell.name}")
            jobs.append((label, cell.loaded, grid_dir / "_shared" / label, job.stop_after,
                         cell_resources(cell.loaded.data, options.cpus_per_cell, options.kind == "ray")))
        for (label, *_), result in zip(jobs, _run_jobs(jobs, cache, options, grid_dir)):
            if result["error"]:  # the cells would fail the same way; they report it themselves
                on_event(f"{label} failed: {result['error']}")
    outcomes = {i: CellOutcome(cells[i].name, grid_dir / cells[i].name, _metrics(grid_dir / cells[i].name),
                               None, skipped=True) for i in range(len(cells)) if i not in todo}
    for i in outcomes:
        on_event(f"cell {cells[i].name}: done already, skipped")
    jobs = [(cells[i].name, cells[i].loaded, grid_dir / cells[i].name, None,
             cell_resources(cells[i].loaded.data, options.cpus_per_cell, options.kind == "ray")) for i in todo]
    for i in todo:
        on_event(f"cell {cells[i].name}: submitted to {options.kind} ({_describe(jobs[todo.index(i)][4])})")
    for i, result in zip(todo, _run_jobs(jobs, cache, options, grid_dir)):
        outcomes[i] = CellOutcome(cells[i].name, grid_dir / cells[i].name, result["metrics"], result["error"])
        on_event(f"cell {cells[i].name}: {'failed' if result['error'] else 'done'}")
    return [outcomes[i] for i in range(len(cells))]


def _describe(resources: dict[str, int]) -> str:
    return f"{resources['gpus']} GPU, {resources['cpus']} CPU"


def _metrics(run_dir: Path) -> dict | None:
    import json

    try:
        return json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        return None
