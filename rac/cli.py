"""The `rac` command line: parse argv, call one function per verb, render with rac.ui."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2

EPILOG = """examples:
  rac run recipes/7b_50pct.yaml
  rac run r.yaml prune.sparsity=0.4 +evaluate.limit=50 ~quantize
  rac plan r.yaml                      # stages, cache hit/miss, scopes per block; runs nothing
  rac grid r.yaml --axis prune.sparsity=0.3,0.5 --axis calibration.kind=prompt,rac
  rac grid recipes/grids/table1_math500.yaml   # a grid file (one per paper table)
  rac grid recipes/demo/demo.yaml              # the CPU demo: C4 vs prompt vs RAC on SmolLM2-135M
  rac diff a.yaml b.yaml               # semantic difference + invalidated stages
"""


def _overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("overrides", nargs="*", metavar="OVERRIDE",
                        help="key=value (must exist), +key=value (add), ++key=value (set), ~key (delete)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rac", description="Reasoning-Aware Compression of reasoning LLMs.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="store_true", help="print the rac version and recipe versions")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")

    p = sub.add_parser("run", help="run a recipe end to end (resumes from cached stages)")
    p.add_argument("recipe", help="recipe YAML file")
    _overrides(p)
    p.add_argument("--run-dir", type=Path, help="run directory (default: <run.output_dir>/<name>-<hash>)")
    p.add_argument("--cache", type=Path, help="cache root (default: $RAC_CACHE or ~/.cache/rac)")

    p = sub.add_parser("plan", help="print the stages with cache hit/miss and what they read; runs nothing")
    p.add_argument("recipe")
    _overrides(p)
    p.add_argument("--cache", type=Path, help="cache root (default: $RAC_CACHE or ~/.cache/rac)")

    p = sub.add_parser("validate", help="validate recipe and grid files; non-zero exit on any error")
    p.add_argument("files", nargs="+", type=Path)
    p.add_argument("--portable", action="store_true",
                   help="check the recipe only, not this machine (e.g. vLLM recipes on a machine without vLLM)")

    p = sub.add_parser("grid", help="run the cartesian product of axes or a grid file")
    p.add_argument("recipe", help="recipe YAML, or a grid file (with `axes`/`overlays`)")
    p.add_argument("--axis", action="append", default=[],
                   help="key=v1,v2 or @overlay_a.yaml,@overlay_b.yaml (repeatable)")
    _overrides(p)
    p.add_argument("--output-dir", type=Path, help="where the grid directory goes (default: run.output_dir)")
    p.add_argument("--cache", type=Path, help="cache root (default: $RAC_CACHE or ~/.cache/rac)")
    p.add_argument("--dry-run", action="store_true", help="expand and validate the cells only")

    p = sub.add_parser("show", help="print the fully resolved recipe (defaults filled)")
    p.add_argument("recipe")
    _overrides(p)
    p.add_argument("--format", choices=("yaml", "json"), default="yaml")

    p = sub.add_parser("diff", help="semantic difference of two resolved recipes and the stages it invalidates")
    p.add_argument("a")
    p.add_argument("b")

    p = sub.add_parser("cache", help="list or remove cached artifacts")
    cache_sub = p.add_subparsers(dest="cache_verb", metavar="ACTION", required=True)
    c = cache_sub.add_parser("ls", help="list artifacts")
    c.add_argument("--stage")
    c.add_argument("--cache", type=Path, help="cache root (default: $RAC_CACHE or ~/.cache/rac)")
    c = cache_sub.add_parser("rm", help="remove artifacts (by stage and/or fingerprint prefix)")
    c.add_argument("fingerprint", nargs="?", help="fingerprint prefix")
    c.add_argument("--stage")
    c.add_argument("--all", action="store_true", help="remove everything")
    c.add_argument("--cache", type=Path, help="cache root (default: $RAC_CACHE or ~/.cache/rac)")

    p = sub.add_parser("rollouts", help="inspect rollout artifacts")
    r_sub = p.add_subparsers(dest="rollouts_verb", metavar="ACTION", required=True)
    r = r_sub.add_parser("show", help="print sample rollouts and length statistics of a run")
    r.add_argument("target", help="run directory or rollout fingerprint (prefix)")
    r.add_argument("-n", type=int, default=3, help="number of sample texts")
    r.add_argument("--cache", type=Path, help="cache root (default: $RAC_CACHE or ~/.cache/rac)")

    p = sub.add_parser("report", help="Table-1 style report and plots for a run or grid directory")
    p.add_argument("path", type=Path)
    p.add_argument("--out", type=Path, help="output directory (default: <path>/report)")
    p.add_argument("--aggregate", action="append", default=[], metavar="KEY",
                   help="average runs that differ only in KEY (mean ± SE), e.g. seed or run.seed; repeatable")
    p.add_argument("--format", choices=("table", "readme"), default="table",
                   help="readme: print the README's demo-results table (C4 / prompt-only / RAC) instead")
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
