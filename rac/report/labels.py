"""Labels a reader of the paper recognises, made from what a run really did (its resolved recipe).

Compression comes from every prune scope's own pattern / sparsity / modules / blocks (not just
``prune.pattern``): "2:4 MLP first+last third + FP8", "50%", "2:4 MLP first third + 50% attn".
Calibration comes from the kind and the sources (an ``hf:allenai/c4`` text source is "C4") and, for
RAC, the rollout source model ("RAC off-policy (…-14B)"). Budgets read "32k tokens".
"""

from __future__ import annotations

import json
from typing import Any

from rac.nm_pattern import parse_pattern

SCHEME_LABELS = {"fp8_w8a8": "FP8"}
METHOD_LABELS = {"sparsegpt": "", "wanda": "Wanda", "magnitude": "magnitude"}
BLOCK_LABELS = {"first_third": "first", "middle_third": "middle", "last_third": "last"}
TEXT_SOURCES = {"c4": "C4", "allenai/c4": "C4", "c4_sample": "C4"}
ALL_MODULES = ("attn", "mlp")


def flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted key -> leaf value (lists and null sections are leaves)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: data} if prefix else {}


def value_text(value: Any) -> str:
    """A recipe value as compact, unambiguous text (0.5 and "0.5" differ)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def model_label(recipe: dict) -> str:
    """The model id's last path component ("DeepSeek-R1-Distill-Qwen-7B"), with the revision if pinned."""
    model = recipe.get("model") or {}
    model = model if isinstance(model, dict) else {"id": model}
    name = str(model.get("id", "?")).rstrip("/").rsplit("/", 1)[-1]
    return f"{name}@{model['revision']}" if model.get("revision") else name


def _percent(value: float) -> str:
    text = f"{value * 100:.1f}".rstrip("0").rstrip(".")
    return f"{text}%"


def _target(prune: dict, scope: dict) -> tuple[str, float]:
    pattern = scope.get("pattern") or prune.get("pattern")
    parsed = parse_pattern(pattern) if pattern else None
    if parsed:
        n, m = parsed
        return f"{n}:{m}", (m - n) / m
    raw = scope.get("sparsity")
    if raw is None:  # the scope inherits prune.sparsity
        raw = prune.get("sparsity")
    value = float(raw or 0.0)
    return _percent(value), value


def _modules(scope: dict) -> str:
    modules = scope.get("modules") or list(ALL_MODULES)
    modules = [modules] if isinstance(modules, str) else list(modules)
    if sorted(modules) == sorted(ALL_MODULES):
        return ""
    return "+".join("MLP" if m == "mlp" else str(m) for m in modules)


def _blocks(blocks: Any) -> str:
    if blocks in (None, "all"):
        return "all"
    if isinstance(blocks, str):
        return BLOCK_LABELS.get(blocks, f"blocks {blocks}")
    if isinstance(blocks, dict):
        return f"blocks {blocks.get('from', 0):g}-{blocks.get('to', 1):g}"
    return "blocks " + ",".join(map(str, blocks))


def _join_blocks(parts: list[str]) -> str:
    thirds = [p for p in ("first", "middle", "last") if p in parts]
    if thirds and len(thirds) == len(parts):
        return "all" if len(thirds) == 3 else "+".join(thirds) + " third"
    return "+".join(parts)


def prune_label(prune: dict) -> str:
    """Per-scope pruning, scopes with the same target / method / modules merged over their blocks."""
    scopes = prune.get("scopes") or [{"modules": list(ALL_MODULES), "blocks": "all"}]
    groups: dict[tuple[str, str, str], list[str]] = {}
    for scope in scopes:
        target, _ = _target(prune, scope)
        method = METHOD_LABELS.get(str(scope.get("method") or prune.get("method") or "sparsegpt"),
                                   str(scope.get("method") or prune.get("method")))
        groups.setdefault((target, method, _modules(scope)), []).append(_blocks(scope.get("blocks")))
    parts = []
    for (target, method, modules), blocks in groups.items():
        where = _join_blocks(blocks)
        words = [target, method, modules]
        if where != "all":
            words.append(where)
        elif modules:
            words.append("all blocks")
        parts.append(" ".join(w for w in words if w))
    return " + ".join(parts)


def compression_label(recipe: dict) -> str:
    """"dense", "50%", "2:4 MLP first+last third", "2:4 MLP first+last third + FP8", "FP8"."""
    parts = []
    if recipe.get("prune"):
        parts.append(prune_label(recipe["prune"]))
    quantize = recipe.get("quantize")
    if quantize:
        scheme = str(quantize.get("scheme", "fp8_w8a8")) if isinstance(quantize, dict) else "fp8_w8a8"
        parts.append(SCHEME_LABELS.get(scheme, scheme))
    return " + ".join(parts) or "dense"


def compression_value(recipe: dict) -> float:
    """The nominal sparsity of the first scope (0 for dense), the x axis of sparsity plots."""
    prune = recipe.get("prune")
    if not prune:
        return 0.0
    scopes = prune.get("scopes") or [{}]
    return _target(prune, scopes[0])[1]


def uses_calibration(recipe: dict) -> bool:
    """Only pruning reads calibration data (FP8 has dynamic activation scales)."""
    return bool(recipe.get("prune"))


def source_label(source: dict) -> str:
    """A calibration source's short name: builtin data set, or the hub / file name of its path."""
    name = str(source.get("dataset") or source.get("path") or "?")
    if name.startswith("hf:"):
        name = name[3:].split(":", 1)[0]
    key = name.lower()
    if key in TEXT_SOURCES:
        return TEXT_SOURCES[key]
    return name.rstrip("/").rsplit("/", 1)[-1]


def calibration_label(recipe: dict, contrast_policy: bool = False, show_sources: bool = False) -> str:
    """"C4", "text (wikitext)", "prompt", "RAC"; with ``contrast_policy`` "RAC on-policy" /
    "RAC off-policy (<model>)"; with ``show_sources`` the source names in brackets."""
    calib = recipe.get("calibration") or {}
    kind = str(calib.get("kind", "rac"))
    sources = [s for s in calib.get("sources") or [] if isinstance(s, dict)]
    names = "+".join(dict.fromkeys(source_label(s) for s in sources))
    if kind == "text":
        label = "C4" if names == "C4" else f"text ({names or '?'})"
        return label
    label = "RAC" if kind == "rac" else kind
    if kind == "rac":
        source_model = (calib.get("rollout") or {}).get("model")
        if source_model:
            label += f" off-policy ({model_label({'model': source_model})})"
        elif contrast_policy:
            label += " on-policy"
    return f"{label} [{names}]" if show_sources and names else label


def budget_label(value: Any) -> str:
    """Generation budget: 32768 -> "32k tokens", 256 -> "256 tokens"."""
    if isinstance(value, int) and value >= 1024 and value % 1024 == 0:
        return f"{value // 1024}k tokens"
    return f"{value} tokens"
