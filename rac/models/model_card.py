"""What an exported model is, for people (README.md with hub front matter) and machines (rac_export.json).

Both are built from one ``export_facts`` dict: the base model and revision, the recipe and its hash,
the calibration, per-scope pruning (target and achieved sparsity or N:M pattern), the FP8 scheme and
the run's evaluation metrics, so a folder pushed to a hub says how it was made.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import yaml

import rac
from rac.hashing import json_digest

SIDECAR = "rac_export.json"
CARD = "README.md"


def recipe_digest(recipe: dict) -> str:
    """sha256 of the resolved recipe's sections (model ... run) as canonical JSON."""
    return json_digest(recipe, compact=True)


def scope_summary(report: list[dict], numel: dict[str, int]) -> list[dict]:
    """Per prune scope: method, target (sparsity or pattern), module count and achieved sparsity (by weights)."""
    groups: dict[str, dict[str, Any]] = {}
    zeros: dict[str, float] = defaultdict(float)
    sizes: dict[str, int] = defaultdict(int)
    for row in report:
        if row.get("achieved") is None:
            continue
        scope = str(row.get("scope"))
        entry = groups.setdefault(scope, {"scope": scope, "method": row.get("method"), "pattern": row.get("pattern"),
                                          "sparsity": row.get("sparsity"), "modules": 0, "blocks": set()})
        entry["modules"] += 1
        if int(row.get("block", -1)) >= 0:
            entry["blocks"].add(int(row["block"]))
        size = numel.get(str(row.get("name")), 1)
        zeros[scope] += float(row["achieved"]) * size
        sizes[scope] += size
    out = []
    for scope, entry in groups.items():
        blocks = sorted(entry.pop("blocks"))
        entry["blocks"] = f"{blocks[0]}-{blocks[-1]}" if blocks else "outside blocks"
        entry["achieved_sparsity"] = round(zeros[scope] / sizes[scope], 4) if sizes[scope] else None
        out.append(entry)
    return out


def _numeric_metrics(evaluation: dict | None) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for task, metrics in (evaluation or {}).items():
        if isinstance(metrics, dict):
            values = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if values:
                out[str(task)] = values
    return out


def export_facts(recipe: dict, report: list[dict] | None, numel: dict[str, int], evaluation: dict | None,
                 export_format: str) -> dict:
    """The machine-readable description of an exported model (also the sidecar's content).

    ``recipe`` is schema-filled (what stages read): every key below is present; optional sections
    (prune, quantize) are absent or null."""
    model, calibration = recipe["model"], recipe["calibration"]
    rollout = calibration["rollout"] if calibration["kind"] == "rac" else None
    quantize = recipe.get("quantize")
    return {
        "rac_version": rac.__version__,
        "base_model": str(model["id"]),
        "base_model_revision": model["revision"],
        "format": export_format,
        "recipe_sha256": recipe_digest(recipe),
        "calibration": {
            "kind": calibration["kind"],
            "sources": [s["path"] or s["dataset"] for s in calibration["sources"]],
            "budget": calibration["budget"],
            "t_max": rollout["t_max"] if rollout else None,
            "rollout_model": rollout["model"]["id"] if rollout and rollout["model"] else None,
        },
        "pruning": scope_summary(report or [], numel) if recipe.get("prune") else [],
        "quantization": {"scheme": quantize["scheme"], "ignore": quantize["ignore"]} if quantize else None,
        "metrics": _numeric_metrics(evaluation),
        "recipe": recipe,
    }


def _hub_id(model_id: str) -> str | None:
    """A hub repo id (org/name) is a valid `base_model`; local paths and aliases are not."""
    parts = model_id.split("/")
    return model_id if len(parts) == 2 and all(parts) and not model_id.startswith((".", "/", "~")) else None


def model_card(facts: dict) -> str:
    """README.md: hub front matter (base_model, tags) and a human summary of the same facts."""
    tags = ["rac", "reasoning-aware-compression"]
    if facts["pruning"]:
        tags += ["pruned", "sparse"] + sorted({str(s["method"]) for s in facts["pruning"]})
        if any(s.get("pattern") for s in facts["pruning"]):
            tags.append("semi-structured-sparsity")
    if facts["quantization"]:
        tags += ["fp8", "compressed-tensors"]
    front: dict[str, Any] = {"library_name": "transformers", "pipeline_tag": "text-generation", "tags": tags}
    base = _hub_id(facts["base_model"])
    if base:
        front["base_model"] = base
        if facts["quantization"]:
            front["base_model_relation"] = "quantized"
    lines = ["---", yaml.safe_dump(front, sort_keys=False).strip(), "---", "",
             f"# {facts['base_model'].rstrip('/').split('/')[-1]} compressed with rac", "",
             f"Made by rac {facts['rac_version']} (Reasoning-Aware Compression) from `{facts['base_model']}`"
             + (f" (revision `{facts['base_model_revision']}`)" if facts["base_model_revision"] else "")
             + f"; recipe sha256 `{facts['recipe_sha256']}` (full recipe in `{SIDECAR}`).", ""]
    cal = facts["calibration"]
    lines += [f"**Calibration**: {cal['kind']} on {', '.join(map(str, cal['sources'])) or '-'}"
              + (f", rollouts up to {cal['t_max']} tokens" if cal["t_max"] else "")
              + (f" from `{cal['rollout_model']}` (off-policy)" if cal["rollout_model"] else ""), ""]
    if facts["pruning"]:
        lines += ["| scope | method | target | blocks | modules | achieved sparsity |", "|---|---|---|---|---|---|"]
        for s in facts["pruning"]:
            target = s["pattern"] or s["sparsity"]
            lines.append(f"| {s['scope']} | {s['method']} | {target} | {s['blocks']} | {s['modules']} "
                         f"| {s['achieved_sparsity']} |")
        lines.append("")
    else:
        lines += ["**Pruning**: none (dense).", ""]
    quant = facts["quantization"]
    lines += [f"**Quantization**: {quant['scheme']} (ignored: {', '.join(quant['ignore'] or []) or 'none'})"
              if quant else "**Quantization**: none.", ""]
    if facts["metrics"]:
        lines += ["| task | metric | value |", "|---|---|---|"]
        for task, values in facts["metrics"].items():
            lines += [f"| {task} | {k} | {v:.4g} |" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)


def write_card_and_sidecar(out_dir: Any, facts: dict) -> None:
    """README.md and rac_export.json next to the weights."""
    from pathlib import Path

    folder = Path(out_dir)
    (folder / SIDECAR).write_text(json.dumps(facts, indent=2, sort_keys=True, default=str) + "\n")
    (folder / CARD).write_text(model_card(facts))
