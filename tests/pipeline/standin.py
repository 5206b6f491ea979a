"""Small stand-in stages for engine tests: they record every execution in a counter directory."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

from rac.pipeline.stage import Stage, StageContext


def _counter(ctx: StageContext, name: str) -> None:
    counts = Path(ctx.recipe["counts"])
    counts.mkdir(parents=True, exist_ok=True)
    (counts / f"{name}-{len(list(counts.glob(name + '-*')))}").touch()


def _gen(ctx: StageContext) -> dict:
    _counter(ctx, "gen")
    (ctx.out_dir / "numbers.json").write_text(json.dumps(list(range(ctx.recipe["gen"]["n"]))))
    return {"n": ctx.recipe["gen"]["n"]}


def _scale(ctx: StageContext) -> dict:
    _counter(ctx, "scale")
    if os.environ.get("RAC_TEST_KILL") == "scale":
        os.kill(os.getpid(), signal.SIGKILL)
    numbers = json.loads((ctx.inputs["gen"] / "numbers.json").read_text())
    scaled = [x * ctx.recipe["scale"]["factor"] for x in numbers]
    (ctx.out_dir / "scaled.json").write_text(json.dumps(scaled))
    return {"total": sum(scaled)}


def _report(ctx: StageContext) -> dict:
    _counter(ctx, "report")
    scaled = json.loads((ctx.inputs["scale"] / "scaled.json").read_text())
    (ctx.out_dir / "report.txt").write_text(str(max(scaled)))
    return {"max": max(scaled)}


STAGES = (
    Stage("gen", needs=(), reads=("gen.n",), version="1", run=_gen),
    Stage("scale", needs=("gen",), reads=("scale.factor",), version="1", run=_scale),
    Stage("report", needs=("scale",), reads=("report",), version="1", run=_report,
          enabled=lambda r: bool(r.get("report")), cached=False),
)


def loaded(recipe: dict) -> SimpleNamespace:
    return SimpleNamespace(data=recipe, path="standin.yaml", files=[], overrides=[])


def counts(recipe: dict, name: str) -> int:
    return len(list(Path(recipe["counts"]).glob(f"{name}-*")))
