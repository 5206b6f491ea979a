"""Pipeline stages, one module each; imported lazily so validation never imports torch."""

from __future__ import annotations

import importlib

from rac.engine.stage import Stage

STAGE_ORDER: tuple[str, ...] = ("rollout", "hessian", "prune", "recover", "quantize", "evaluate", "export")


def load_stages() -> tuple[Stage, ...]:
    """The registered stages in pipeline order."""
    return tuple(importlib.import_module(f"rac.stages.{name}").STAGE for name in STAGE_ORDER)
