"""Driver for test_interrupt.py: runs a recipe in forked children that SIGKILL themselves inside one
stage each (in pipeline order), then resumes to completion in the parent.

Usage: python kill_driver.py RECIPE RUN_DIR CACHE_DIR REPORT_JSON STAGE [STAGE ...]
The report lists, per killed stage, the child's exit code and the status.json it left behind.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from pathlib import Path


def _killing(stage, blobs: Path):
    """``stage`` with a run that SIGKILLs the process once it has written its first file (its
    artifact or a cache blob), or at the latest just before it returns (before the seal)."""
    real = stage.run

    def run(ctx):
        start = time.time()

        def wrote_something() -> bool:
            files = [p for p in Path(ctx.out_dir).rglob("*") if p.is_file()]
            files += [p for p in blobs.rglob("*.safetensors") if p.stat().st_mtime >= start]
            return bool(files)

        def watch() -> None:
            while True:
                if wrote_something():
                    os.kill(os.getpid(), signal.SIGKILL)
                time.sleep(0.005)

        threading.Thread(target=watch, daemon=True).start()
        real(ctx)
        os.kill(os.getpid(), signal.SIGKILL)

    run.__module__ = real.__module__  # the fingerprint hashes the stage's own code: keep the real stage's key
    return dataclasses.replace(stage, run=run)


def _child(recipe: str, run_dir: str, cache_dir: str, victim: str) -> None:
    from rac.app import load_stages, run_loaded
    from rac.pipeline.cache import Cache
    from rac.recipe.validate import load_and_validate

    cache = Cache(cache_dir)
    stages = [_killing(s, cache.root / "blobs") if s.name == victim else s for s in load_stages()]
    run_loaded(load_and_validate(recipe), cache, Path(run_dir), stages=stages)


def _warm_imports() -> None:
    """Import (only import: no torch ops before fork) what the stages use, once for every child."""
    import importlib

    from rac.app import load_stages

    load_stages()
    for name in ("transformers.models.llama.modeling_llama", "transformers.models.auto.modeling_auto",
                 "transformers.models.auto.tokenization_auto", "transformers.generation.utils",
                 "safetensors.torch", "compressed_tensors", "rac.models.load", "rac.engines.hf",
                 "rac.calibration.mix", "rac.calibration.rollouts", "rac.eval.probe", "rac.eval.math"):
        try:
            importlib.import_module(name)
        except ImportError:
            pass


def main(recipe: str, run_dir: str, cache_dir: str, report: str, *victims: str) -> None:
    from rac.app import run_loaded
    from rac.pipeline.cache import Cache
    from rac.recipe.validate import load_and_validate

    _warm_imports()
    ctx = multiprocessing.get_context("fork")  # children share the imports above
    out: dict = {"killed": []}
    for victim in victims:
        child = ctx.Process(target=_child, args=(recipe, run_dir, cache_dir, victim))
        child.start()
        child.join()
        status = json.loads((Path(run_dir) / "status.json").read_text())
        out["killed"].append({"stage": victim, "exitcode": child.exitcode, "status": status,
                              "sealed": Cache(cache_dir).exists(victim, status[victim]["fingerprint"])})
    result = run_loaded(load_and_validate(recipe), Cache(cache_dir), Path(run_dir))
    out["final"] = json.loads((result.run_dir / "status.json").read_text())
    out["metrics_stages"] = {k: v["status"] for k, v in result.metrics["stages"].items()}
    Path(report).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(*sys.argv[1:])
