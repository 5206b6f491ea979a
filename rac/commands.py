"""One function per CLI verb: load/validate first (no torch), then call the engine, then render."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rac import ui
from rac.cli import EXIT_FAILED, EXIT_INVALID, EXIT_OK


def _load(recipe: str, overrides: list[str]) -> Any:
    from rac.recipe.validate import load_and_validate

    return load_and_validate(recipe, overrides)


def _cache(args: argparse.Namespace):
    from rac.engine.cache import Cache

    return Cache(getattr(args, "cache", None))


def _guard(fn):
    """Recipe and input errors become a clean message and exit code 2, never a traceback."""
    def wrapped(args: argparse.Namespace) -> int:
        from rac.recipe.errors import RecipeError

        try:
            return fn(args)
        except RecipeError as exc:
            ui.recipe_errors(exc)
            return EXIT_INVALID
        except (FileNotFoundError, ValueError) as exc:
            ui.error(str(exc))
            return EXIT_INVALID
    wrapped.__name__ = fn.__name__
    return wrapped


@_guard
def cmd_validate(args: argparse.Namespace) -> int:
    from rac.recipe.errors import RecipeError
    from rac.recipe.grid import expand_grid, is_grid_file

    failures = 0
    for path in args.files:
        try:
            if is_grid_file(path):
                cells = expand_grid(grid_file=path, environment=not args.portable)
                ui.validated(str(path), True, f"(grid: {len(cells)} cells)")
            else:
                from rac.recipe.validate import load_and_validate

                load_and_validate(str(path), [], environment=not args.portable)
                ui.validated(str(path), True)
        except RecipeError as exc:
            failures += 1
            ui.validated(str(path), False)
            ui.recipe_errors(exc)
    return EXIT_INVALID if failures else EXIT_OK


@_guard
def cmd_show(args: argparse.Namespace) -> int:
    loaded = _load(args.recipe, args.overrides)
    ui.show_recipe(loaded.data, args.format)
    return EXIT_OK


@_guard
def cmd_diff(args: argparse.Namespace) -> int:
    from rac.engine.pipeline import diff_loaded

    result = diff_loaded(_load(args.a, []), _load(args.b, []))
    ui.recipe_diff(result.changes, result.invalidated)
    return EXIT_OK


def scope_rows(recipe: dict) -> list[tuple[str, str]]:
    """Per block range: which modules each scope selects (for `rac plan`); equal blocks are merged."""
    if not recipe.get("prune"):
        return []
    from rac.models.load import num_blocks
    from rac.recipe.scopes import assign_scopes

    n = num_blocks(recipe["model"])
    if not n:
        return [("?", "model depth unknown without downloading its config")]
    assignment = assign_scopes(recipe["prune"], n)
    by_block: dict[int, dict[str, list[str]]] = {}
    for (block, module), spec in sorted(assignment.items()):
        target = f"{spec.pattern[0]}:{spec.pattern[1]}" if spec.pattern else f"{spec.sparsity:.0%}"
        by_block.setdefault(block, {}).setdefault(f"{spec.scope} ({spec.method}, {target})", []).append(module)
    describe = lambda block: "; ".join(  # noqa: E731
        f"{scope}: {', '.join(mods)}" for scope, mods in by_block[block].items()) if block in by_block else "dense"
    rows: list[tuple[str, str]] = []
    if -1 in by_block:
        rows.append(("head/embed", describe(-1)))
    start = 0
    for block in range(1, n + 1):
        if block == n or describe(block) != describe(start):
            label = str(start) if block - 1 == start else f"{start}-{block - 1}"
            rows.append((label, describe(start)))
            start = block
    return rows


@_guard
def cmd_plan(args: argparse.Namespace) -> int:
    from rac.engine.pipeline import plan_recipe

    loaded = _load(args.recipe, args.overrides)
    plan = plan_recipe(loaded.data, _cache(args))
    ui.plan_table(plan, scope_rows(loaded.data))
    return EXIT_OK


@_guard
def cmd_run(args: argparse.Namespace) -> int:
    from rac.engine.pipeline import plan_recipe, run_loaded
    from rac.engine.run import StageFailed

    loaded = _load(args.recipe, args.overrides)
    cache = _cache(args)
    ui.plan_table(plan_recipe(loaded.data, cache), scope_rows(loaded.data))
    try:
        with ui.ProgressUI() as progress:
            result = run_loaded(loaded, cache, args.run_dir, progress, ui.stage_event)
    except StageFailed as exc:
        ui.error(str(exc))
        return EXIT_FAILED
    ui.run_summary(result)
    ui.message(f"run directory: {result.run_dir}")
    return EXIT_OK


@_guard
def cmd_grid(args: argparse.Namespace) -> int:
    from rac.engine.pipeline import grid_dir_for, grid_summary_rows, run_loaded, write_grid_summary
    from rac.engine.run import StageFailed
    from rac.recipe.grid import expand_grid, is_grid_file

    path = Path(args.recipe)
    if is_grid_file(path):
        cells = expand_grid(grid_file=path, axes=args.axis, overrides=args.overrides)
    else:
        cells = expand_grid(recipe_path=path, axes=args.axis, overrides=args.overrides)
    ui.message(f"{len(cells)} cells, all valid")
    for cell in cells:
        ui.message(f"  {cell.name}: {' '.join(map(str, cell.overrides)) or '(base)'}")
    if args.dry_run:
        return EXIT_OK
    first = cells[0].loaded.data
    output_dir = args.output_dir or Path((first.get("run") or {}).get("output_dir") or "runs")
    grid_dir = grid_dir_for(output_dir, path.stem)
    cache = _cache(args)
    results = []
    with ui.ProgressUI() as progress:
        for cell in cells:
            ui.message(f"cell {cell.name}")
            try:
                results.append((cell, run_loaded(cell.loaded, cache, grid_dir / cell.name, progress,
                                                 ui.stage_event), None))
            except StageFailed as exc:
                ui.error(str(exc))
                results.append((cell, exc.result, str(exc)))  # completed stages' metrics stay
    rows = grid_summary_rows(results)
    paths = write_grid_summary(grid_dir, rows)
    ui.grid_summary(rows, paths)
    ui.message(f"grid directory: {grid_dir}")
    return EXIT_FAILED if any(error for _, _, error in results) else EXIT_OK


@_guard
def cmd_cache(args: argparse.Namespace) -> int:
    cache = _cache(args)
    if args.cache_verb == "ls":
        ui.cache_list(cache.list(args.stage))
        return EXIT_OK
    if not (args.all or args.stage or args.fingerprint):
        ui.error("rac cache rm needs a fingerprint prefix, --stage or --all")
        return EXIT_INVALID
    removed = cache.remove(args.stage, args.fingerprint)
    ui.message(f"removed {removed} artifact(s)")
    return EXIT_OK


def _rollout_dir(target: str, cache: Any) -> Path:
    import json

    path = Path(target)
    if (path / "status.json").is_file():
        status = json.loads((path / "status.json").read_text())
        artifact = (status.get("rollout") or {}).get("artifact")
        if not artifact:
            raise ValueError(f"{path}: this run has no rollout stage")
        return Path(artifact)
    if (path / "rollouts.jsonl").is_file():
        return path
    matches = [info.path for info in cache.list("rollout") if info.fingerprint.startswith(target)]
    if len(matches) != 1:
        raise ValueError(f"{target!r}: not a run directory, and matches {len(matches)} rollout artifacts")
    return matches[0]


@_guard
def cmd_rollouts(args: argparse.Namespace) -> int:
    from rac.stages.rollout import summarize_rollouts

    ui.rollout_summary(summarize_rollouts(_rollout_dir(args.target, _cache(args)), n_samples=args.n))
    return EXIT_OK


@_guard
def cmd_report(args: argparse.Namespace) -> int:
    from rac.report.tables import collect_runs, table_one, write_report

    if not args.path.exists():
        raise FileNotFoundError(f"{args.path}: no such run or grid directory")
    records = collect_runs(args.path)
    if not records:
        ui.error(f"{args.path}: no runs with metrics.json found")
        return EXIT_FAILED
    aggregate = getattr(args, "aggregate", None) or []
    if getattr(args, "format", "table") == "readme":
        from rac.report.readme import demo_table

        ui.verbatim(demo_table(records))
        return EXIT_OK
    ui.report_table(table_one(records, aggregate=aggregate))
    for written in write_report(args.path, args.out or args.path / "report", aggregate=aggregate):
        ui.message(f"wrote {written}")
    return EXIT_OK
