"""Every recipe key the schema defines, with its type, default, range and description (``rac keys``).

List items appear as ``key[]`` (``calibration.sources[].weight``); evaluation task types, which are
``oneOf`` branches, as ``evaluate.tasks[].<type>.key`` (``evaluate.tasks[].probe.t_max``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from rac.recipe.schema import deref, recipe_schema

_BOUNDS = (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<"))


@dataclass(frozen=True)
class KeyInfo:
    """One recipe key: dotted path, type, default (JSON text; "" = none), range and description."""

    path: str
    type: str
    default: str
    range: str
    description: str


def _type(schema: dict) -> str:
    if "enum" in schema:
        return "enum"
    if "const" in schema:
        return "const"
    wanted = schema.get("type")
    if isinstance(wanted, list):
        return " | ".join("mapping" if t == "object" else "list" if t == "array" else t for t in wanted)
    if wanted:
        return {"object": "mapping", "array": "list"}.get(wanted, wanted)
    if "oneOf" in schema or "anyOf" in schema:
        return "one of several shapes"
    return "any"


def _range(schema: dict) -> str:
    if "enum" in schema:
        return " | ".join("null" if v is None else str(v) for v in schema["enum"])
    if "const" in schema:
        return str(schema["const"])
    parts = [f"{sign} {schema[key]}" for key, sign in _BOUNDS if key in schema]
    if "pattern" in schema:
        parts.append(f"format {schema['pattern']}")
    if "minItems" in schema:
        parts.append(f"at least {schema['minItems']} item(s)")
    return ", ".join(parts)


def _walk(schema: dict, path: str, root: dict, out: list[KeyInfo]) -> None:
    schema = deref(schema, root)
    if path:
        default = json.dumps(schema["default"]) if "default" in schema else ""
        out.append(KeyInfo(path, _type(schema), default, _range(schema), str(schema.get("description", ""))))
    for key, sub in schema.get("properties", {}).items():
        _walk(sub, f"{path}.{key}" if path else key, root, out)
    items = schema.get("items")
    if isinstance(items, dict):
        items = deref(items, root)
        branches = items.get("oneOf") or items.get("anyOf")
        if branches:
            for branch in branches:
                branch = deref(branch, root)
                const = branch.get("properties", {}).get("type", {}).get("const")
                _walk(branch, f"{path}[].{const}" if const else f"{path}[]", root, out)
        elif "properties" in items:
            _walk(items, f"{path}[]", root, out)


def schema_keys(prefix: str = "") -> list[KeyInfo]:
    """Keys at or under the dotted ``prefix`` ("" = all), in schema order."""
    root = recipe_schema()
    out: list[KeyInfo] = []
    _walk(root, "", root, out)
    prefix = prefix.strip(".")
    if not prefix:
        return out

    def plain(path: str) -> str:
        return path.replace("[]", "")

    return [k for k in out if plain(k.path) == plain(prefix) or plain(k.path).startswith(plain(prefix) + ".")
            or k.path == prefix or k.path.startswith(prefix + ".") or k.path.startswith(prefix + "[")]
