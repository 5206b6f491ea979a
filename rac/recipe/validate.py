"""Validate a loaded recipe: JSON Schema first, then semantic checks; every problem at once.

Each issue reads ``file:line:col: $.json.path: message`` and points at the file (or ``<cli>``
override) that set the bad value; a missing key points at its enclosing mapping.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

import rac
from rac.recipe.checks import ENVIRONMENT_CHECKS, SEMANTIC_CHECKS
from rac.recipe.errors import RecipeError, RecipeIssue, json_path
from rac.recipe.load import LoadedRecipe, load_recipe
from rac.recipe.overrides import Override
from rac.recipe.schema import deref, recipe_schema
from rac.recipe.source import join_path
from rac.suggest import did_you_mean

_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
               dict: "mapping", type(None): "null"}


def _is_integer(checker: Any, instance: Any) -> bool:
    """Integers only: JSON Schema counts 1e32 and 16384.0 as integers, a recipe does not."""
    return isinstance(instance, int) and not isinstance(instance, bool)


_StrictValidator = validators.extend(
    Draft202012Validator, type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


@lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return _StrictValidator(recipe_schema())


def supported_versions() -> str:
    """The recipe versions this rac reads, for messages."""
    return ", ".join(str(v) for v in rac.RECIPE_VERSIONS)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def _issues(err: ValidationError, loaded: LoadedRecipe) -> list[RecipeIssue]:
    """Turn one jsonschema error into readable issues located in the recipe sources."""
    dotted = join_path(list(err.absolute_path))
    here = loaded.locate(dotted)
    kind, value, inst = err.validator, err.validator_value, err.instance

    def issue(msg: str, path: str = dotted) -> RecipeIssue:
        return RecipeIssue(loaded.locate(path) if path != dotted else here, json_path(path), msg)

    if kind == "additionalProperties" and isinstance(inst, dict):
        known = list(err.schema.get("properties", {}))
        return [issue(f"unknown key {k!r}{did_you_mean(k, known)}", join_path(list(err.absolute_path) + [k]))
                for k in inst if k not in known]
    if kind == "required" and isinstance(inst, dict):
        out = []
        for name in value:
            if name in inst:
                continue
            extra = f" (this rac reads recipe versions: {supported_versions()})" if name == "version" and not dotted else ""
            out.append(issue(f"missing required key {name!r}{extra}"))
        return out
    if kind == "type":
        wanted = " or ".join(value) if isinstance(value, list) else value
        whole = "integer" in (value if isinstance(value, list) else [value]) and isinstance(inst, float) \
            and inst.is_integer()
        hint = " (a whole number written as a float: write it without a decimal point or exponent)" if whole else ""
        return [issue(f"expected {wanted}, got {_type_name(inst)} {_short(inst)}{hint}")]
    if kind in ("enum", "const"):
        options = value if kind == "enum" else [value]
        hint = did_you_mean(inst, [o for o in options if isinstance(o, str)]) if isinstance(inst, str) else ""
        shown = ", ".join("null" if o is None else str(o) for o in options)
        return [issue(f"{_short(inst)} is not one of: {shown}{hint}")]
    bounds = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    if kind in bounds:
        return [issue(f"{_short(inst)} is out of range: must be {bounds[kind]} {value}")]
    if kind == "pattern":
        return [issue(f"{_short(inst)} has the wrong format: {err.schema.get('description', value)}")]
    if kind == "minItems":
        return [issue(f"needs at least {value} item{'s' if value != 1 else ''}")]
    if kind == "minLength":
        return [issue("must not be empty")]
    if kind in ("oneOf", "anyOf"):
        return _branch_issues(err, loaded, issue)
    return [issue(err.message)]


def _branch_issues(err: ValidationError, loaded: LoadedRecipe, issue: Any) -> list[RecipeIssue]:
    """oneOf/anyOf: report the errors of the branch the value was meant for (by ``type`` or shape)."""
    branches = [deref(s) for s in err.validator_value]
    consts = [b.get("properties", {}).get("type", {}).get("const") for b in branches]
    inst = err.instance
    chosen: int | None = None
    if any(consts) and isinstance(inst, dict):
        names = [c for c in consts if c]
        if inst.get("type") not in names:
            got = inst.get("type")
            where = join_path(list(err.absolute_path) + ["type"]) if "type" in inst else join_path(list(err.absolute_path))
            what = f"unknown type {got!r}{did_you_mean(str(got), names)}" if got is not None else "missing required key 'type'"
            return [issue(f"{what}; must be one of: {', '.join(names)}", where)]
        chosen = consts.index(inst.get("type"))
    else:
        fits = [i for i, b in enumerate(branches) if _shape_fits(b, inst)]
        chosen = fits[0] if len(fits) == 1 else None
    if chosen is not None:
        sub = [e for e in err.context or [] if e.relative_schema_path and e.relative_schema_path[0] == chosen]
        if sub:
            return [i for e in sub for i in _issues(e, loaded)]
    options = [o for b in branches for o in b.get("enum", []) if isinstance(o, str)]
    hint = did_you_mean(inst, options) if isinstance(inst, str) else ""
    return [issue(f"invalid value {_short(inst)}{hint}: {err.schema.get('description', err.message)}")]


def _shape_fits(branch: dict, inst: Any) -> bool:
    """Whether ``inst`` has the JSON type a branch expects."""
    if "enum" in branch:
        return any(type(inst) is type(option) for option in branch["enum"])
    wanted = branch.get("type")
    names = wanted if isinstance(wanted, list) else [str(wanted)]
    return _type_name(inst) in [{"object": "mapping", "array": "list"}.get(n, n) for n in names]


def _schema_issues(loaded: LoadedRecipe) -> tuple[list[RecipeIssue], set[str]]:
    """Schema issues and the top-level sections they concern."""
    issues: list[RecipeIssue] = []
    sections: set[str] = set()
    errors = sorted(_validator().iter_errors(loaded.raw), key=lambda e: [str(p) for p in e.absolute_path])
    for err in errors:
        issues.extend(_issues(err, loaded))
        path = list(err.absolute_path)
        if path:
            sections.add(str(path[0]))
        elif err.validator == "required":
            sections.update(str(k) for k in err.validator_value)
        elif err.validator == "additionalProperties" and isinstance(err.instance, dict):
            sections.update(str(k) for k in err.instance)
        else:
            sections.add("*")
    issues.sort(key=lambda i: (i.location.file, i.location.line, i.location.col))
    return issues, sections


def _version_issue(loaded: LoadedRecipe) -> RecipeIssue | None:
    if "version" not in loaded.raw:
        return None
    version = loaded.raw["version"]
    if type(version) is int and version in rac.RECIPE_VERSIONS:
        return None
    return RecipeIssue(loaded.locate("version"), "$.version",
                       f"unsupported recipe version {_short(version)}; this rac reads versions: {supported_versions()}")


def _related(path: str, others: set[str]) -> bool:
    """Whether JSON path ``path`` is one of ``others``, inside one, or contains one."""
    return any(path == o or path.startswith((o + ".", o + "[")) or o.startswith((path + ".", path + "["))
               for o in others)


def model_blocks(loaded: LoadedRecipe) -> int | None:
    """The model's depth from local information (builtin alias, local config, hub cache, rac's table)."""
    from rac.models.facts import model_depth

    return model_depth(loaded.data.get("model"))


def validate(loaded: LoadedRecipe, n_blocks: int | None = None, environment: bool = True) -> list[RecipeIssue]:
    """Every problem of a loaded recipe (empty list = valid), all at once.

    An unknown ``version`` is reported alone (the rest would be checked against the wrong
    schema). Semantic checks run on every section, also one with schema errors (an issue about a
    value the schema already reports is left out). ``n_blocks`` (the model depth; default: from
    the model's config when it is available locally) bounds block ranges and finds empty scopes.
    ``environment=False`` skips the checks of this machine (installed engines).
    """
    version = _version_issue(loaded)
    if version is not None:
        return [version]
    issues, _ = _schema_issues(loaded)
    bad = {issue.path for issue in issues}
    if n_blocks is None:
        n_blocks = model_blocks(loaded)
    for _sections, check in SEMANTIC_CHECKS:
        if not environment and check in ENVIRONMENT_CHECKS:
            continue
        try:
            found = check(loaded, n_blocks)
        except (TypeError, ValueError, AttributeError, KeyError, IndexError):
            continue  # tripped over a value of the wrong shape: the schema issues above report it
        issues.extend(issue for issue in found if not _related(issue.path, bad))
    return issues


def load_and_validate(path: str | os.PathLike[str], overrides: Sequence[str | Override] = (),
                      overlays: Sequence[str | os.PathLike[str]] = (),
                      n_blocks: int | None = None, environment: bool = True) -> LoadedRecipe:
    """Load, resolve and validate a recipe; raises RecipeError with every issue at once."""
    loaded = load_recipe(path, overrides, overlays)
    issues = validate(loaded, n_blocks, environment)
    if issues:
        raise RecipeError(issues)
    return loaded
