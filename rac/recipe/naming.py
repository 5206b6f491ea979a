"""Recipe names for grid cells that say what the cell is: model, calibration, sparsity, scope, quantization.

A grid's cells inherit the base recipe's ``name`` unless an overlay sets one, so every cell of a paper
grid used to be called ``r1-distill-7b-rac-sparsegpt50`` -- the 14B C4 cell included. When a grid's
cells do not all have distinct names, each gets a descriptive one such as
``deepseek-r1-distill-qwen-14b_c4_sparsegpt30`` or
``deepseek-r1-distill-qwen-14b_rac_mlp-first-2of4+mlp-last-2of4_fp8``; cells that would still share a
name get their grid label appended. Grids whose overlays already name every cell apart are left alone.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any

from rac.recipe.errors import Location
from rac.recipe.scopes import DEFAULT_SCOPE, scope_list


def _slug(text: str) -> str:
    return re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9.+-]+", "-", text.lower())).strip("-")


def model_slug(spec: Any) -> str:
    """Last component of a model id (hub id, folder or .gguf file), lowercased."""
    model_id = str((spec or {}).get("id") or "model")
    return _slug(os.path.splitext(os.path.basename(model_id.rstrip("/")))[0] if model_id.endswith(".gguf")
                 else os.path.basename(model_id.rstrip("/")))


def _calibration(recipe: dict) -> str:
    calibration = recipe.get("calibration") or {}
    kind = str(calibration.get("kind") or "rac")
    if kind == "text":
        sources = calibration.get("sources") or [{}]
        first = sources[0] if isinstance(sources[0], dict) else {}
        name = first.get("dataset") or str(first.get("path") or "text").split(":")[1 if ":" in str(first.get("path")) else 0]
        return _slug(os.path.basename(str(name))) or "text"
    source = (calibration.get("rollout") or {}).get("model")
    if kind == "rac" and source:
        return f"rac-from-{model_slug(source)}"
    return kind


def _target(scope: dict, prune: dict) -> str:
    pattern = scope.get("pattern") if scope.get("pattern") is not None else prune.get("pattern")
    if pattern is not None:
        return str(pattern).replace(":", "of")
    sparsity = scope.get("sparsity") if scope.get("sparsity") is not None else prune.get("sparsity", 0.5)
    return f"{round(float(sparsity if sparsity is not None else 0.5) * 100):d}"


def _prune(recipe: dict) -> str:
    prune = recipe.get("prune")
    if not prune:
        return "dense"
    method = str(prune.get("method") or "sparsegpt")
    scopes = scope_list(prune)
    if len(scopes) == 1 and {k: scopes[0].get(k) for k in DEFAULT_SCOPE} == DEFAULT_SCOPE:
        return f"{scopes[0].get('method') or method}{_target(scopes[0], prune)}"
    parts = [f"{_slug(str(s.get('name') or 'scope'))}-{_target(s, prune)}" for s in scopes]
    return f"{method}_{'+'.join(parts)}"


def describe(recipe: dict) -> str:
    """``<model>_<calibration>_<method+sparsity | scopes>[_fp8]`` for a resolved recipe."""
    bits = [model_slug(recipe.get("model")), _calibration(recipe) if recipe.get("prune") else "", _prune(recipe)]
    quantize = recipe.get("quantize")
    if quantize:
        bits.append(str(quantize.get("scheme") or "fp8").split("_")[0])
    return "_".join(b for b in bits if b)


def _distinguishers(recipes: list[dict]) -> list[str]:
    """Per recipe, ``_<key>-<value>`` for the (at most two) scalar keys whose values differ between them."""
    from rac.recipe.diff import diff_recipes

    paths: list[str] = []
    for other in recipes[1:]:
        for change in diff_recipes(recipes[0], other):
            if change.path not in paths and change.path != "name" and not isinstance(change.new, (dict, list)):
                paths.append(change.path)
    out = []
    for recipe in recipes:
        bits = []
        for path in paths[:2]:
            node: Any = recipe
            for part in path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, (dict, list)):
                bits.append(f"_{path.split('.')[-1]}-{_slug(str(node))}")
        out.append("".join(bits))
    return out


def name_cells(cells: list[tuple[str, Any]], where: Location) -> None:
    """Give each (label, LoadedRecipe) a descriptive recipe ``name`` unless the names already differ."""
    names = [loaded.data.get("name") for _, loaded in cells]
    if len(cells) < 2 or len(set(names)) == len(names):
        return
    described = [describe(loaded.data) for _, loaded in cells]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(described):
        groups.setdefault(name, []).append(i)
    for indices in groups.values():
        if len(indices) > 1:
            for i, suffix in zip(indices, _distinguishers([cells[i][1].data for i in indices])):
                described[i] += suffix
    counts = Counter(described)
    for (label, loaded), name in zip(cells, described):
        final = f"{name}_{label}" if counts[name] > 1 and label else name
        loaded.data["name"] = final
        loaded.raw["name"] = final
        loaded.source_map["name"] = where
