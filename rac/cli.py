"""The `rac` command line: parse argv, call one function per verb, render with rac.ui."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rac.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK  # noqa: F401 (re-exported)
from rac.suggest import did_you_mean

EPILOG = """examples:
  rac run recipes/7b_50pct.yaml
  rac run r.yaml prune.sparsity=0.4 +evaluate.limit=50 ~quantize
  rac plan r.yaml                      # stages, cache hit/miss, scopes per block; runs nothing
  rac grid r.yaml --axis prune.sparsity=0.3,0.5 --axis calibration.kind=prompt,rac
  rac grid recipes/grids/table1_math500.yaml   # a grid file (one per paper table)
  rac grid recipes/demo/demo.yaml              # the CPU demo: C4 vs prompt vs RAC on SmolLM2-135M
  rac diff a.yaml b.yaml               # semantic difference + invalidated stages (exit 1 if different)
  rac diff --git origin/main..HEAD --format md   # review every changed recipe/overlay/grid
  rac plan recipes/grids/table1_math500.yaml --cell sparsity-0.5_14b_rac   # one cell of a grid
  rac keys prune                       # recipe keys: type, default, range, description
  rac show r.yaml --origin             # each value with the file:line (or default, <cli>) that set it
"""


CACHE_HELP = "cache root (default: $RAC_CACHE or ~/.cache/rac)"
RECIPE_OR_GRID = "recipe YAML, or a grid file (pick a cell with --cell)"
CELL_HELP = ("grid cell: its full name, the name without the hash, or a unique part of it "
             "(without it, a grid's cells are listed)")


def _overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="key=value (must exist), +key=value (add), ++key=value (set), ~key (delete)")


def _verbose(parser: argparse.ArgumentParser) -> None:
    """``-v`` also after the verb (``rac validate f.yaml -v``)."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")


def _stage_name(text: str) -> str:
    """A pipeline stage name; a typo is an error with the closest name."""

    from rac.app import STAGE_ORDER
    from rac.pipeline.cache import BLOB_KINDS

    names = tuple(dict.fromkeys((*STAGE_ORDER, *BLOB_KINDS)))
    if text in names:
        return text
    hint = did_you_mean(text, names)
    raise argparse.ArgumentTypeError(f"{text!r} is not a stage or blob kind{hint}; known: {', '.join(names)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rac", description="Reasoning-Aware Compression of reasoning LLMs.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the rac version and recipe versions")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("run", help="run a recipe end to end (resumes from cached stages)")
    p.add_argument("recipe", help="recipe YAML file")
    _overrides(p)
    where = p.add_mutually_exclusive_group()
    where.add_argument("--output-dir", type=Path,
                       help="where the run directory <name>-<hash> goes (default: run.output_dir), as for grid")
    where.add_argument("--run-dir", type=Path, help="the run directory itself (exact path, no <name>-<hash>)")
    p.add_argument("--cache", type=Path, help=CACHE_HELP)
    _verbose(p)

    p = sub.add_parser("plan", help="stages, cache hit/miss, model shapes, per-stage memory/disk/token "
                                    "estimates and scopes per block; runs nothing, works without vLLM or network")
    p.add_argument("recipe", help=RECIPE_OR_GRID)
    _overrides(p)
    p.add_argument("--cell", help=CELL_HELP)
    p.add_argument("--cache", type=Path, help=CACHE_HELP)
    _verbose(p)

    p = sub.add_parser("validate", help="validate recipe, overlay and grid files; non-zero exit on any error",
                       description="Validate any mix of recipes, overlay fragments and grid files (a directory "
                       "stands for every YAML file below it). An overlay (no `version`; under an overlays/ "
                       "directory, marked `# rac: overlay`, or listed by a grid given here) is checked as a "
                       "partial recipe. What this machine lacks (an engine) is a warning unless --strict.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="recipe, overlay or grid YAML files, or directories to search for *.yaml; "
                   "key=value / ~key arguments are overrides applied to every recipe and grid")
    p.add_argument("--portable", action="store_true",
                   help="check the files only, not this machine (no warning about engines not installed here)")
    p.add_argument("--strict", action="store_true",
                   help="also fail when this machine cannot run a recipe (e.g. vLLM not installed)")
    _verbose(p)
    p.set_defaults(overrides=[])  # k=v after an option lands here (main appends extras)

    p = sub.add_parser("grid", help="run the cartesian product of axes or a grid file")
    p.add_argument("recipe", help="recipe YAML, or a grid file (with `axes`/`overlays`)")
    p.add_argument("--axis", action="append", default=[],
                   help="key=v1,v2 or @overlay_a.yaml,@overlay_b.yaml (repeatable, one axis per key)")
    _overrides(p)
    p.add_argument("--output-dir", type=Path, help="where the grid directory goes (default: run.output_dir)")
    p.add_argument("--cache", type=Path, help=CACHE_HELP)
    p.add_argument("--dry-run", action="store_true",
                   help="expand and validate the cells, show what each changes and its cache state; runs nothing "
                        "(portable: works without vLLM)")
    p.add_argument("--status", action="store_true", help="each cell's state from its run directory")
    p.add_argument("--cell", action="append", default=[], metavar="NAME",
                   help="only this cell (repeatable): its full name, the name without the hash, or a unique part "
                        "of it; the other cells' finished runs stay in the grid summary")
    p.add_argument("--executor", choices=("local", "ray", "slurm", "submitit-local"), default="local",
                   help="where cells run: this process (default), Ray tasks, Slurm jobs (submitit), "
                        "or submitit's local processes")
    p.add_argument("--address", help="Ray cluster address (default: $RAY_ADDRESS, else a local Ray)")
    p.add_argument("--cpus-per-cell", type=int, default=1, help="CPUs each cell's task/job asks for")
    p.add_argument("--timeout-min", type=int, default=24 * 60, help="time limit of each Slurm job (minutes)")
    p.add_argument("--slurm-partition", help="Slurm partition for the cells' jobs")
    p.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                   help="another submitit slurm_KEY parameter, e.g. account=proj (repeatable)")
    _verbose(p)

    p = sub.add_parser("show", help="print the fully resolved recipe (defaults filled); portable")
    p.add_argument("recipe", help=RECIPE_OR_GRID)
    _overrides(p)
    p.add_argument("--cell", help=CELL_HELP)
    p.add_argument("--format", choices=("yaml", "json"), default="yaml", help="output format")
    p.add_argument("--origin", action="store_true",
                   help="mark each value with where it was set: file:line, <cli>:N, or default")
    _verbose(p)

    p = sub.add_parser("keys", help="recipe keys with type, default, range and description (from the schema)")
    p.add_argument("prefix", nargs="?", metavar="PREFIX",
                   help="only keys under this dotted prefix, e.g. prune or calibration.rollout")
    _verbose(p)

    p = sub.add_parser("diff", help="review diff of recipes, overlays or grids (also across git revisions)",
                       description="Semantic difference of two recipe/overlay/grid files, or of every one changed\n"
                       "between two git revisions, with the stages and grid cells that must re-run and an\n"
                       "estimate of their cost. Portable: never checks this machine.\n"
                       "Exit 0: same, 1: different, 2: error.", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  rac diff recipes/7b_50pct.yaml recipes/overlays/model/14b.yaml\n"
                       "  rac diff HEAD~1:recipes/7b_50pct.yaml recipes/7b_50pct.yaml\n"
                       "  rac diff --git origin/main..HEAD --format md   # the PR comment")
    p.add_argument("a", nargs="?", metavar="OLD",
                   help="old side: a file, or REV:path to read it (and its base chain) from git")
    p.add_argument("b", nargs="?", metavar="NEW", help="new side: a file or REV:path; an overlay against a "
                   "recipe means that recipe with the overlay applied")
    p.add_argument("--git", metavar="BASE..HEAD",
                   help="review every recipe, overlay and grid that resolves differently between two "
                   "revisions (BASE alone: against the working tree)")
    p.add_argument("--under", default="recipes", metavar="DIR",
                   help="with --git: the directory holding the recipes (default: recipes)")
    p.add_argument("--format", choices=("text", "md"), default="text",
                   help="text (full values, never cut) or md (a pull-request comment)")
    _verbose(p)

    p = sub.add_parser("review", help="pull-request check: validate all recipes and write the diff as markdown",
                       description="Validate every recipe, overlay and grid under DIR at HEAD (portably) and "
                       "review what resolves differently since BASE as a markdown PR comment (what changed, "
                       "the stages and grid cells to re-run, their estimated cost). Exit 0 when every file "
                       "is valid, 2 otherwise. Used by .github/workflows/recipes.yml.")
    p.add_argument("range", metavar="BASE..HEAD", help="git revisions (BASE alone: against the working tree)")
    p.add_argument("--under", default="recipes", metavar="DIR", help="the directory holding the recipes "
                   "(default: recipes)")
    p.add_argument("--output", type=Path, metavar="FILE", help="write the markdown here instead of stdout")
    _verbose(p)

    p = sub.add_parser("cache", help="list, remove or evict cached artifacts and blobs")
    cache_sub = p.add_subparsers(dest="cache_verb", metavar="ACTION", required=True)
    c = cache_sub.add_parser("ls", help="list artifacts, blobs (Hessians, probe references) and partial entries")
    c.add_argument("--stage", type=_stage_name, help="a stage name or blob kind (hessian, probe_dense)")
    c.add_argument("--cache", type=Path, help=CACHE_HELP)
    c = cache_sub.add_parser("rm", help="remove entries (by stage or blob kind and/or fingerprint prefix)")
    c.add_argument("fingerprint", nargs="?", help="fingerprint (or blob key) prefix")
    c.add_argument("--stage", type=_stage_name, help="a stage name or blob kind (hessian, probe_dense)")
    c.add_argument("--all", action="store_true", help="remove everything")
    c.add_argument("--cache", type=Path, help=CACHE_HELP)
    c = cache_sub.add_parser("gc", help="remove stale partial entries, then the least recently used until it fits")
    c.add_argument("--max-size", required=True, help="size budget, e.g. 500M, 20G, 1.5T (powers of 1024)")
    c.add_argument("--cache", type=Path, help=CACHE_HELP)

    p = sub.add_parser("rollouts", help="inspect rollout artifacts")
    r_sub = p.add_subparsers(dest="rollouts_verb", metavar="ACTION", required=True)
    r = r_sub.add_parser("show", help="print sample rollouts and length statistics of a run")
    r.add_argument("target", help="run directory or rollout fingerprint (prefix)")
    r.add_argument("-n", type=int, default=3, help="number of sample texts")
    r.add_argument("--cache", type=Path, help="cache root (default: $RAC_CACHE or ~/.cache/rac)")

    p = sub.add_parser("report", help="Table-1 style report and plots for a run or grid directory")
    p.add_argument("path", type=Path, help="a run directory or a grid directory")
    _verbose(p)
    p.add_argument("--out", type=Path, help="output directory (default: <path>/report)")
    p.add_argument("--cache", type=Path, help=CACHE_HELP)
    p.add_argument("--aggregate", action="append", default=[], metavar="KEY",
                   help="average runs that differ only in KEY (mean ± SE), e.g. seed or run.seed; repeatable")
    p.add_argument("--format", choices=("table", "readme"), default="table",
                   help="readme: print the README's demo-results table (C4 / prompt-only / RAC) instead")
    p.add_argument("--paper", metavar="NAME",
                   help="render a paper layout: table1..table5, figure1, figure2 or length (default: detected "
                        "from the grid directory's name, e.g. runs/table1_math500)")
    return parser


def _quiet_third_party() -> None:
    """rac draws its own progress; silence the per-file bars of transformers / huggingface_hub."""
    import os

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # overrides may also follow options (`rac grid r.yaml --axis a=1,2 prune.sparsity=0.4`)
    if extra:
        if not hasattr(args, "overrides") or any(item.startswith("-") for item in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    from rac import ui

    if args.version:
        import rac

        ui.message(f"rac {rac.__version__} (recipe versions: {', '.join(map(str, rac.RECIPE_VERSIONS))})")
        return EXIT_OK
    if not args.verb:
        parser.print_help()
        return EXIT_INVALID
    ui.setup_logging(args.verbose)
    if int(os.environ.get("RANK", "0") or 0) > 0:  # torchrun: rank 0 speaks for the group
        ui.console.quiet = True
    if args.verb in ("run", "grid", "plan", "rollouts", "report"):  # validate/show/diff stay torch-free
        _quiet_third_party()
    from rac import commands

    handler = getattr(commands, f"cmd_{args.verb}")
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        ui.error("interrupted; completed stages are cached — rerun the same command to resume")
        return 130


if __name__ == "__main__":
    sys.exit(main())
