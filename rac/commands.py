"""One function per CLI verb: load/validate first (no torch), then call the engine, then render."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rac import ui
from rac.errors import EXIT_BUG, EXIT_FAILED, EXIT_INVALID, EXIT_OK, RacError, UsageError


def _load(recipe: str, overrides: list[str], portable: bool = False) -> Any:
    from rac.recipe.validate import load_and_validate

    return load_and_validate(recipe, overrides, environment=not portable)


def _target(args: argparse.Namespace) -> Any:
    """The recipe a read-only verb looks at: a recipe file, or one ``--cell`` of a grid file.

    Portable: checks the recipe, not this machine (``plan`` says in a note what is missing here).
    """
    from rac.recipe.cells import pick_cell
    from rac.recipe.grid import expand_grid, is_grid_file

    path = Path(args.recipe)
    if is_grid_file(path):
        cells = expand_grid(grid_file=path, overrides=args.overrides, environment=False)
        return pick_cell(cells, args.cell, str(path)).loaded
    if getattr(args, "cell", None):
        raise UsageError(f"--cell picks a cell of a grid file; {path} is a recipe")
    return _load(args.recipe, args.overrides, portable=True)


def _cache(args: argparse.Namespace):
    from rac.pipeline.cache import Cache

    return Cache(getattr(args, "cache", None))


def _guard(fn):
    """User errors (``RacError``, a missing input file) become one ``error:`` line and exit code 2.

    Anything else is a bug in rac: its traceback is written to a crash log (and shown with ``-v``),
    the console gets one line pointing there, and the exit code is ``EXIT_BUG``.
    """
    def wrapped(args: argparse.Namespace) -> int:
        from rac.recipe.errors import RecipeError

        try:
            return fn(args)
        except RecipeError as exc:
            ui.recipe_errors(exc)
            return EXIT_INVALID
        except (FileNotFoundError, RacError) as exc:
            ui.error(str(exc))
            return EXIT_INVALID
        except Exception as exc:  # noqa: BLE001 - a bug: keep its traceback, never dress it as a user error
            ui.internal_error(exc, verbose=bool(getattr(args, "verbose", False)))
            return EXIT_BUG
    wrapped.__name__ = fn.__name__
    return wrapped


def _yaml_args(items: list[str]) -> tuple[list[Path], list[str]]:
    """(files, overrides): a directory stands for every ``*.yaml``/``*.yml`` below it (sorted);
    ``key=value``, ``+key=value`` and ``~key`` that are not existing paths are overrides."""
    files: list[Path] = []
    overrides: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
            if not found:
                raise FileNotFoundError(f"{item}: no YAML files in this directory")
            files += found
        elif not path.exists() and ("=" in item or item.startswith("~")):
            overrides.append(item)
        else:
            files.append(path)
    if not files:
        raise FileNotFoundError("rac validate: no files given (only overrides: " + " ".join(overrides) + ")")
    return files, overrides


def _validate_one(path: Path, kind: str, overrides: list[str]) -> tuple[str, list[Any]]:
    """Validate one file as its kind, portably; returns (detail for the ok line, loaded recipes)."""
    from rac.recipe.grid import expand_grid
    from rac.recipe.overlay import load_fragment
    from rac.recipe.validate import load_and_validate

    if kind == "grid":
        cells = expand_grid(grid_file=path, overrides=overrides, environment=False)
        return f"(grid: {len(cells)} cells)", [cell.loaded for cell in cells]
    if kind == "overlay":
        load_fragment(path)
        return "(overlay)", []
    return "", [load_and_validate(str(path), overrides, environment=False)]


def _machine_issues(loaded: list[Any]) -> list[Any]:
    """What this machine lacks to run these recipes (engines not installed), each issue once."""
    from rac.recipe.checks import ENVIRONMENT_CHECKS
    from rac.recipe.errors import RecipeError

    return RecipeError(issue for recipe in loaded for check in ENVIRONMENT_CHECKS
                       for issue in check(recipe, None)).issues


@_guard
def cmd_validate(args: argparse.Namespace) -> int:
    """Errors in the files fail; what this machine lacks (an engine) is a warning unless ``--strict``."""
    from rac.recipe.errors import RecipeError
    from rac.recipe.overlay import file_kind, grid_overlay_files

    files, overrides = _yaml_args([*map(str, args.files), *getattr(args, "overrides", [])])
    refs = grid_overlay_files([p for p in files if file_kind(p) == "grid"])
    failures = 0
    for path in files:
        try:
            detail, loaded = _validate_one(path, file_kind(path, refs), overrides)
            machine = [] if args.portable else _machine_issues(loaded)
            if machine and args.strict:
                raise RecipeError(machine)
        except RecipeError as exc:
            failures += 1
            ui.validated(str(path), False)
            ui.recipe_errors(exc)
            continue
        ui.validated(str(path), True, detail)
        for issue in machine:
            ui.warning(f"{issue} (this machine; --strict makes it an error, --portable hides it)")
    if len(files) > 1:
        ui.message(f"{len(files) - failures} of {len(files)} file(s) valid")
    return EXIT_INVALID if failures else EXIT_OK


@_guard
def cmd_show(args: argparse.Namespace) -> int:
    loaded = _target(args)
    if args.origin:
        from rac.recipe.origin import origins

        ui.show_recipe_origins(loaded.data, origins(loaded), args.format)
    else:
        ui.show_recipe(loaded.data, args.format)
    return EXIT_OK


@_guard
def cmd_keys(args: argparse.Namespace) -> int:
    from rac.recipe.keys import schema_keys

    keys = schema_keys(args.prefix or "")
    if not keys:
        from rac.recipe.keys import schema_keys as all_keys
        from rac.suggest import did_you_mean

        ui.error(f"no recipe key starts with {args.prefix!r}"
                 f"{did_you_mean(args.prefix, [k.path for k in all_keys('')])}")
        return EXIT_INVALID
    ui.key_table(keys)
    return EXIT_OK


@_guard
def cmd_diff(args: argparse.Namespace) -> int:
    """Portable review diff: two files (``REV:path`` allowed) or every rac file changed in ``--git``."""
    from rac.recipe.compare import compare, load_side, review_trees
    from rac.recipe.gitrev import GitError, Revisions, split_range
    from rac.report.review import review_entry, review_markdown

    if bool(args.git) == bool(args.a or args.b) or (not args.git and not (args.a and args.b)):
        ui.error("rac diff needs two files (A B) or --git BASE..HEAD")
        return EXIT_INVALID
    try:
        with Revisions() as revs:
            errors: list[str] = []
            notes: list[str] = []
            if args.git:
                base, head = split_range(args.git)
                review = review_trees(revs.tree(base), revs.tree(head), args.under)
                comparisons, notes = review.comparisons, review.notes
                errors = [f"error: {issue}" for _, exc in review.errors for issue in exc.issues]
                title = f"{base}..{head or 'working tree'}"
            else:
                a_tree, a_path = revs.resolve(args.a)
                b_tree, b_path = revs.resolve(args.b)
                a = load_side(a_path, args.a, a_tree)
                b = load_side(b_path, args.b, b_tree)
                comparisons = [compare(a, b, a_tree, b_tree)]
                comparisons = [c for c in comparisons if c.different]
                title = f"{args.a} → {args.b}"
            entries = [review_entry(c) for c in comparisons]
    except GitError as exc:
        ui.error(str(exc))
        return EXIT_INVALID
    if args.format == "md":
        ui.markdown(review_markdown(entries, title, errors, notes))
    else:
        ui.review(entries, errors, notes)
    if errors:
        return EXIT_INVALID
    return EXIT_FAILED if entries else EXIT_OK


@_guard
def cmd_review(args: argparse.Namespace) -> int:
    """The pull-request check: validate every recipe file at HEAD, then the ``--git`` review as markdown.

    Exit 0 when every file is valid (whether or not something changed), 2 otherwise; the comment is
    written either way, so a PR shows its invalid recipes too.
    """
    from rac.recipe.compare import review_trees, validate_tree
    from rac.recipe.gitrev import GitError, Revisions, split_range
    from rac.report.review import review_entry, review_markdown

    try:
        with Revisions() as revs:
            base, head = split_range(args.range)
            head_tree = revs.tree(head)
            checked, failures = validate_tree(head_tree, args.under)
            review = review_trees(revs.tree(base), head_tree, args.under)
            entries = [review_entry(c) for c in review.comparisons]
    except GitError as exc:
        ui.error(str(exc))
        return EXIT_INVALID
    errors = [f"error: {issue}" for _, exc in failures for issue in exc.issues]
    notes = [*review.notes, f"{checked - len(failures)} of {checked} recipe file(s) under {args.under}/ valid "
             "(checked portably: recipes only, not the CI machine)"]
    text = review_markdown(entries, f"{base}..{head or 'working tree'}", errors, notes)
    if args.output:
        args.output.write_text(text, encoding="utf-8")
        ui.message(f"wrote {args.output}")
    else:
        ui.markdown(text)
    for line in errors:
        ui.error(line.removeprefix("error: "))
    return EXIT_INVALID if failures else EXIT_OK


def scope_rows(recipe: dict, n_blocks: int | None = None) -> list[tuple[str, str]]:
    """Per block range: which modules each scope selects (depth from local information only)."""
    from rac.models.facts import model_depth
    from rac.workflow.preview import scope_rows as rows

    return rows(recipe, n_blocks or model_depth(recipe.get("model")))


@_guard
def cmd_plan(args: argparse.Namespace) -> int:
    from rac.workflow.preview import preview_recipe

    loaded = _target(args)
    ui.plan_preview(preview_recipe(loaded, _cache(args)))
    return EXIT_OK


def _run_dir(args: argparse.Namespace, recipe: dict) -> Path | None:
    """``--run-dir`` is the run directory itself; ``--output-dir`` is where it goes (like ``grid``)."""
    if args.run_dir is not None:
        return args.run_dir
    if args.output_dir is not None:
        from rac.pipeline.run import default_run_dir

        return Path(args.output_dir) / default_run_dir(recipe, Path(args.recipe).stem).name  # same name as run
    return None


@_guard
def cmd_run(args: argparse.Namespace) -> int:
    from rac.app import plan_recipe, run_loaded
    from rac.pipeline.run import StageFailed

    loaded = _load(args.recipe, args.overrides)
    cache = _cache(args)
    ui.plan_table(plan_recipe(loaded.data, cache), scope_rows(loaded.data))
    try:
        with ui.ProgressUI() as progress:
            result = run_loaded(loaded, cache, _run_dir(args, loaded.data), progress, ui.stage_event)
    except StageFailed as exc:
        ui.error(str(exc))
        return EXIT_FAILED
    ui.run_summary(result)
    ui.message(f"run directory: {result.run_dir}")
    return EXIT_OK


def _grid_base(path: Path, overrides: list[str]) -> Any:
    """The recipe a grid's cells vary (a grid file's ``recipe``, or the recipe given), unvalidated."""
    import os

    import yaml

    from rac.recipe.grid import is_grid_file
    from rac.recipe.load import load_recipe
    from rac.recipe.source import RecipeLoader

    recipe = path
    if is_grid_file(path):
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=RecipeLoader)
        recipe = Path(os.path.join(os.path.dirname(path), str(data.get("recipe"))))
    return load_recipe(recipe, overrides)


@_guard
def cmd_grid(args: argparse.Namespace) -> int:
    from rac.app import run_loaded
    from rac.pipeline.run import StageFailed
    from rac.recipe.cells import select_cells
    from rac.recipe.grid import expand_grid, is_grid_file
    from rac.report.grid import grid_dir_for, grid_summary_rows, write_grid_summary

    path = Path(args.recipe)
    environment = not args.dry_run
    if is_grid_file(path):
        every = expand_grid(grid_file=path, axes=args.axis, overrides=args.overrides, environment=environment)
    else:
        every = expand_grid(recipe_path=path, axes=args.axis, overrides=args.overrides, environment=environment)
    cells = select_cells(every, args.cell, str(path))
    subset = len(cells) < len(every)
    if subset:
        ui.message(f"--cell: {len(cells)} of the grid's {len(every)} cells")
    if args.dry_run:
        from rac.workflow.preview import grid_preview

        ui.grid_preview(grid_preview(cells, _grid_base(path, args.overrides), _cache(args)))
        return EXIT_OK
    ui.message(f"{len(every)} cells, all valid" + (f"; running {len(cells)}" if subset else ""))
    for cell in cells:
        ui.message(f"  {cell.name}: {' '.join(map(str, cell.overrides)) or '(base)'}")
    first = cells[0].loaded.data
    output_dir = args.output_dir or Path((first.get("run") or {}).get("output_dir") or "runs")
    grid_dir = grid_dir_for(output_dir, path.stem)
    cache = _cache(args)
    executor = getattr(args, "executor", "local")
    if getattr(args, "status", False):
        from rac.workflow.executors import grid_states

        ui.grid_status(grid_states(cells, grid_dir, cache))
        return EXIT_OK
    results = [] if executor == "local" else _cluster_results(args, cells, grid_dir, cache)
    with ui.ProgressUI() as progress:
        for cell in cells if executor == "local" else []:
            ui.message(f"cell {cell.name}")
            try:
                results.append((cell, run_loaded(cell.loaded, cache, grid_dir / cell.name, progress,
                                                 ui.stage_event), None))
            except StageFailed as exc:
                ui.error(str(exc))
                results.append((cell, exc.result, str(exc)))  # completed stages' metrics stay
    if subset:  # the cells not run keep their finished runs in the summary
        results = _with_earlier_results(every, results, grid_dir, cache)
    rows = grid_summary_rows(results)
    paths = write_grid_summary(grid_dir, rows)
    ui.grid_summary(rows, paths)
    ui.message(f"grid directory: {grid_dir}")
    return EXIT_FAILED if any(error for _, _, error in results) else EXIT_OK


def _with_earlier_results(every: list, results: list, grid_dir: Path, cache: Any) -> list:
    """``results`` of the cells run, plus the finished runs of the others (``--cell``), in grid order."""
    from rac.workflow.executors import finished_results

    ran = {cell.name: (cell, result, error) for cell, result, error in results}
    earlier = finished_results([cell for cell in every if cell.name not in ran], grid_dir, cache)
    ui.message(f"--cell: {len(ran)} of {len(every)} cells run; {len(earlier)} other(s) finished earlier, kept in "
               "the summary")
    return [ran[cell.name] if cell.name in ran else (cell, earlier[cell.name], None)
            for cell in every if cell.name in ran or cell.name in earlier]


def _cache_names() -> tuple[str, ...]:
    """What `--stage` may name: the pipeline stages and the blob kinds (Hessians, probe references)."""
    from rac.app import STAGE_ORDER
    from rac.pipeline.cache import BLOB_KINDS

    return tuple(dict.fromkeys((*STAGE_ORDER, *BLOB_KINDS)))


def _cluster_results(args: argparse.Namespace, cells: list, grid_dir: Path, cache: Any) -> list:
    """Cells run as Ray tasks or submitit jobs (rac.workflow.executors), as (cell, result, error) rows."""
    from rac.pipeline.plan import Plan
    from rac.pipeline.run import RunResult
    from rac.workflow.executors import ExecutorOptions, run_grid_cells

    bad = [item for item in args.slurm if "=" not in item or not item.split("=", 1)[0]]
    if bad:
        raise UsageError(f"--slurm {bad[0]!r}: expected KEY=VALUE (a submitit slurm_KEY parameter)")
    if args.cpus_per_cell < 1 or args.timeout_min < 1:
        raise UsageError("--cpus-per-cell and --timeout-min must be >= 1")
    slurm = dict(item.split("=", 1) for item in args.slurm)
    if args.slurm_partition:
        slurm["partition"] = args.slurm_partition
    options = ExecutorOptions(args.executor, args.address, args.cpus_per_cell, args.timeout_min, slurm)
    outcomes = run_grid_cells(cells, grid_dir, cache, options, ui.message)
    return [(cell, RunResult(o.run_dir, Plan(), o.metrics) if o.metrics else None, o.error)
            for cell, o in zip(cells, outcomes)]


@_guard
def cmd_cache(args: argparse.Namespace) -> int:
    from rac.pipeline import housekeeping
    from rac.suggest import did_you_mean

    cache = _cache(args)
    stage = getattr(args, "stage", None)
    if stage is not None and stage not in _cache_names():
        ui.error(f"--stage {stage!r}: not a stage or blob kind{did_you_mean(stage, _cache_names())}; "
                 f"known: {', '.join(_cache_names())}")
        return EXIT_INVALID
    if args.cache_verb == "ls":
        ui.cache_list(housekeeping.entries(cache, stage))
        return EXIT_OK
    if args.cache_verb == "gc":
        removed, freed, kept = housekeeping.gc(cache, housekeeping.parse_size(args.max_size))
        ui.message(f"removed {removed} entr{'y' if removed == 1 else 'ies'} ({freed / 1e6:.1f} MB); "
                   f"{kept / 1e6:.1f} MB kept")
        return EXIT_OK
    if not (args.all or stage or args.fingerprint):
        ui.error("rac cache rm needs a fingerprint prefix, --stage or --all")
        return EXIT_INVALID
    removed = cache.remove(stage, args.fingerprint)
    ui.message(f"removed {removed} entr{'y' if removed == 1 else 'ies'}")
    return EXIT_OK


def _rollout_dir(target: str, cache: Any) -> Path:
    from rac.pipeline.rundir import RunDir

    path = Path(target)
    run = RunDir(path, cache)
    if run.status_file.is_file():
        artifact = run.artifact("rollout")
        if artifact is None:
            raise UsageError(f"{path}: this run has no rollout artifact (no rollout stage, or its cache entry is "
                             f"gone from {cache.root})")
        return artifact
    if (path / "rollouts.jsonl").is_file():
        return path
    matches = [info.path for info in cache.list("rollout") if info.fingerprint.startswith(target)]
    if len(matches) != 1:
        raise UsageError(f"{target!r}: not a run directory, and matches {len(matches)} rollout artifacts")
    return matches[0]


@_guard
def cmd_rollouts(args: argparse.Namespace) -> int:
    from rac.stages.rollout import summarize_rollouts

    ui.rollout_summary(summarize_rollouts(_rollout_dir(args.target, _cache(args)), n_samples=args.n))
    return EXIT_OK


def _paper_report(args: argparse.Namespace, records: list, aggregate: list[str], detected: bool = False) -> int:
    """``--paper NAME`` (or, with ``detected``, the layout the grid directory's name implies, if any)."""
    from rac.report.paper import detect_layout, paper_layout, render_paper
    from rac.report.runs import ReportError

    name = detect_layout(args.path, records) if detected else paper_layout(args.paper)
    if name is None:
        return EXIT_OK
    try:
        table, files = render_paper(name, records, args.out or args.path / "report", aggregate, root=args.path)
    except ReportError as exc:
        if not detected:
            raise
        ui.warning(f"paper layout {name} (detected from the grid directory's name) not rendered: {exc}")
        return EXIT_OK
    ui.report_table(table)
    for written in files:
        ui.message(f"wrote {written}" + (f" (--paper {name}, detected from the grid directory's name)" if detected else ""))
    return EXIT_OK


@_guard
def cmd_report(args: argparse.Namespace) -> int:
    from rac.report.tables import collect_runs, table_one, write_report

    if not args.path.exists():
        raise FileNotFoundError(f"{args.path}: no such run or grid directory")
    cache = _cache(args)
    records = collect_runs(args.path, cache)
    if not records:
        ui.error(f"{args.path}: no runs with metrics.json found")
        return EXIT_FAILED
    aggregate = getattr(args, "aggregate", None) or []
    if getattr(args, "format", "table") == "readme":
        from rac.report.readme import demo_table

        ui.verbatim(demo_table(records))
        return EXIT_OK
    if getattr(args, "paper", None):
        return _paper_report(args, records, aggregate)
    ui.report_table(table_one(records, aggregate=aggregate))
    for written in write_report(args.path, args.out or args.path / "report", aggregate=aggregate, cache=cache):
        ui.message(f"wrote {written}")
    _paper_report(args, records, aggregate, detected=True)
    return EXIT_OK
