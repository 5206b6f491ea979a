"""rac's wiring of the generic engine: which stages, how model identities and the device are resolved,
which environment facts a run records. The one module above ``rac.pipeline`` that knows all of them.

``rac.commands`` (the CLI), ``rac.api`` and the grid executors plan and run recipes through here; the
engine itself (plan, cache, run) receives stages, identities and a :class:`Runtime` as arguments.
Stage modules are imported lazily, so validation and planning previews never import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rac.pipeline.cache import Cache
from rac.pipeline.plan import Plan, build_plan
from rac.pipeline.run import RunResult, run_recipe
from rac.pipeline.runtime import Runtime, base_environment
from rac.pipeline.stage import ProgressReporter, Stage

# The pipeline, in order; each name is a module rac/stages/<name>.py that defines ``STAGE``.
STAGE_ORDER: tuple[str, ...] = ("rollout", "hessian", "prune", "recover", "quantize", "evaluate", "export")


def load_stages() -> tuple[Stage, ...]:
    """The registered stages in pipeline order (imports the stage modules)."""
    return tuple(importlib.import_module(f"rac.stages.{name}").STAGE for name in STAGE_ORDER)


def model_identities(recipe: dict) -> tuple[str, dict[str, str]]:
    """Identity of the target model, plus the off-policy rollout model's identity for the rollout stage."""
    from rac.models.load import resolve_model

    identity = resolve_model(recipe["model"]).identity
    extra: dict[str, str] = {}
    source = ((recipe.get("calibration") or {}).get("rollout") or {}).get("model")
    if source:
        extra["rollout"] = resolve_model(source).identity
    return identity, extra


def resolve_run_device(run_device: str | None) -> str:
    """``run.device`` -> the torch device; a CUDA request without CUDA fails here, before any work.
    Under torchrun it joins the process group (one device per rank)."""
    from rac.models.distributed import init_from_env
    from rac.models.load import resolve_device

    return init_from_env(resolve_device(run_device))


def environment_info(device: str) -> dict[str, Any]:
    """env.json: the base facts plus torch, transformers, vllm (if installed) and the GPU."""
    import torch
    import transformers

    info = base_environment(device)
    info.update({"torch": torch.__version__, "transformers": transformers.__version__,
                 "torch_threads": torch.get_num_threads()})
    if device.startswith("cuda") and torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import vllm

        info["vllm"] = getattr(vllm, "__version__", "unknown")
    except Exception:
        info["vllm"] = None
    return info


def runtime() -> Runtime:
    """rac's runtime: torch device resolution, torchrun's process group, env.json with library versions."""
    from rac.models import distributed

    return Runtime(device=resolve_run_device, ranks=distributed, environment=environment_info)


def plan_recipe(recipe: dict, cache: Cache | None = None, stages: Sequence[Stage] | None = None) -> Plan:
    """The plan of a resolved recipe: rac's stages, the model identities resolved."""
    identity, extra = model_identities(recipe)
    return build_plan(recipe, cache or Cache(), identity, stages or load_stages(), extra)


def run_loaded(loaded: Any, cache: Cache | None = None, run_dir: Path | None = None,
               progress: ProgressReporter | None = None,
               on_stage: Callable | None = None, stages: Sequence[Stage] | None = None,
               stop_after: str | None = None) -> RunResult:
    """Run a loaded recipe with rac's stages (up to and including ``stop_after``, when given)."""
    chosen = tuple(stages or load_stages())
    if stop_after is not None:
        names = [s.name for s in chosen]
        chosen = chosen[: names.index(stop_after) + 1]
    identity, extra = model_identities(loaded.data)
    return run_recipe(loaded, chosen, identity, cache, run_dir, progress, on_stage, extra, runtime())
