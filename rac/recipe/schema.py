"""The recipe JSON Schema (``schemas/recipe.schema.json``) and filling its defaults into a recipe."""

from __future__ import annotations

import copy
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "recipe.schema.json"
OPTIONAL_SECTIONS = ("prune", "recover", "quantize", "evaluate", "export")


@lru_cache(maxsize=1)
def recipe_schema() -> dict:
    """The recipe schema (draft 2020-12), read once from the installed ``schemas/`` folder."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def deref(schema: dict, root: dict | None = None) -> dict:
    """Follow a local ``$ref`` (``#/$defs/x``), merging sibling keywords over the target."""
    root = root or recipe_schema()
    while "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].lstrip("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def _branch(schema: dict, value: Any, root: dict) -> dict | None:
    """The oneOf/anyOf branch that ``value`` belongs to (by ``type`` const, else the object branch)."""
    options = [deref(s, root) for s in schema.get("oneOf", schema.get("anyOf", []))]
    if not isinstance(value, dict):
        return None
    for option in options:
        const = option.get("properties", {}).get("type", {}).get("const")
        if const is not None and value.get("type") == const:
            return option
    objects = [o for o in options if "properties" in o and "const" not in o.get("properties", {}).get("type", {})]
    return objects[0] if len(objects) == 1 else None


def _fill(value: Any, schema: dict, root: dict) -> Any:
    schema = deref(schema, root)
    if "oneOf" in schema or "anyOf" in schema:
        branch = _branch(schema, value, root)
        return _fill(value, branch, root) if branch is not None else value
    if isinstance(value, dict) and "properties" in schema:
        for key, sub in schema["properties"].items():
            sub_d = deref(sub, root)
            if key not in value and "default" in sub_d:
                value[key] = copy.deepcopy(sub_d["default"])
            if key in value:
                value[key] = _fill(value[key], sub, root)
        order = [k for k in schema["properties"] if k in value] + [k for k in value if k not in schema["properties"]]
        return {k: value[k] for k in order}
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_fill(item, schema["items"], root) for item in value]
    return value


def fill_defaults(recipe: dict, schema: dict | None = None) -> dict:
    """A deep copy of ``recipe`` with schema defaults filled in, also inside list items.

    Robust to invalid input (wrong types are left alone for the validator to report). Optional
    sections set to null (``prune``, ``quantize``, ``evaluate``, ``export``) are removed, so stages
    test ``"prune" in recipe`` (or ``recipe.get("prune")``) either way.
    """
    root = schema or recipe_schema()
    out = _fill(copy.deepcopy(recipe), root, root)
    if isinstance(out, dict):
        for section in OPTIONAL_SECTIONS:
            if section in out and out[section] is None:
                del out[section]
    return out


def schema_knows(tokens: list) -> bool:
    """Whether a recipe path (tokens: str keys, int list indices) is defined by the schema.

    List items under ``oneOf`` (evaluate tasks) accept a key defined by any branch.
    """
    root = recipe_schema()
    frontier = [root]
    for tok in tokens:
        nxt = []
        for schema in frontier:
            schema = deref(schema, root)
            for option in [schema] + list(schema.get("oneOf", [])) + list(schema.get("anyOf", [])):
                option = deref(option, root)
                if isinstance(tok, int) or (isinstance(tok, str) and tok.isdigit()):
                    if isinstance(option.get("items"), dict):
                        nxt.append(option["items"])
                elif tok in option.get("properties", {}):
                    nxt.append(option["properties"][tok])
        if not nxt:
            return False
        frontier = nxt
    return True
