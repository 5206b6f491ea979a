"""Hydra-style command-line overrides applied to a plain (unresolved) recipe and its source map.

``a.b=1`` sets an existing key (or one the schema defines, e.g. a default the recipe left out),
``+a.b=1`` adds a new one, ``++a.b=1`` sets either way (creating
parents), ``~a.b`` deletes a key or a whole section (``~a.b=v`` only when it currently equals v).
Values are parsed as YAML (``0.4`` -> float, ``[1, 2]`` -> list, ``null`` -> None). List items are
addressed as ``tasks[0]`` or ``tasks.0``; ``+`` / ``++`` at index ``len`` appends.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from rac.recipe.errors import CLI_FILE, Location, RecipeIssue, json_path
from rac.recipe.source import PathToken, RecipeLoader, SourceMap, drop_subtree, join_path, split_path
from rac.suggest import did_you_mean

_SEGMENT = r"(?:[A-Za-z_][\w-]*|\d+)"
_OVERRIDE = re.compile(rf"^(~|\+\+|\+)?({_SEGMENT}(?:\.{_SEGMENT}|\[\d+\])*)(?:=(.*))?$", re.DOTALL)


@dataclass(frozen=True)
class Override:
    """One override: its text and where it came from (``None`` = ``<cli>`` at its argument index)."""

    text: str
    location: Location | None = None


class _Bad(Exception):
    """Internal: an override that cannot be applied (message only)."""


def as_overrides(items: Sequence[str | Override]) -> list[Override]:
    """Normalise strings to :class:`Override` with ``<cli>`` locations (line = 1-based index)."""
    out = []
    for i, item in enumerate(items, start=1):
        if isinstance(item, Override):
            out.append(item if item.location else Override(item.text, Location(CLI_FILE, i, 1)))
        else:
            out.append(Override(str(item), Location(CLI_FILE, i, 1)))
    return out


def parse_value(text: str) -> Any:
    """Parse an override value as YAML; an empty value is the empty string."""
    if text == "":
        return ""
    return yaml.load(text, Loader=RecipeLoader)


def _record(smap: SourceMap, prefix: list[PathToken], value: Any, loc: Location) -> None:
    smap[join_path(prefix)] = loc
    if isinstance(value, dict):
        for key, sub in value.items():
            _record(smap, prefix + [str(key)], sub, loc)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _record(smap, prefix + [i], sub, loc)


def _renumber(smap: SourceMap, list_path: list[PathToken], removed: int) -> None:
    """After deleting item ``removed`` of a list, shift the source map of the later items down."""
    prefix = join_path(list_path)
    moved: SourceMap = {}
    for key in list(smap):
        match = re.match(r"\[(\d+)\]", key[len(prefix):]) if key.startswith(prefix) else None
        if match and int(match.group(1)) > removed:
            rest = key[len(prefix) + match.end():]
            moved[f"{prefix}[{int(match.group(1)) - 1}]{rest}"] = smap.pop(key)
    smap.update(moved)


def _step(container: Any, tok: PathToken, walked: list[PathToken]) -> PathToken:
    """Validate ``tok`` against ``container``; returns the concrete token (int for lists)."""
    where = join_path(walked) or "the recipe root"
    if isinstance(container, list):
        if isinstance(tok, str) and not tok.isdigit():
            raise _Bad(f"{where!r} is a list; address items by index, e.g. {where}[0]")
        return int(tok)
    if isinstance(container, dict):
        if isinstance(tok, int):
            raise _Bad(f"{where!r} is a mapping, not a list")
        return tok
    kind = "null" if container is None else type(container).__name__
    raise _Bad(f"cannot go into {where!r}: it is {kind}, not a mapping")


def _apply_one(data: dict, smap: SourceMap, op: str, tokens: list[PathToken],
               value: Any, has_value: bool, loc: Location, known: Callable[[list], bool]) -> None:
    container: Any = data
    walked: list[PathToken] = []
    for tok in tokens[:-1]:
        tok = _step(container, tok, walked)
        if isinstance(container, list):
            if int(tok) >= len(container):
                raise _Bad(f"index {tok} out of range for {join_path(walked)!r} ({len(container)} items)")
        elif tok not in container or container[tok] is None and (op in ("+", "++") or known(walked + [tok])):
            if op not in ("+", "++") and not known(walked + [tok]):
                raise _Bad(f"key {join_path(walked + [tok])!r} is not in the recipe"
                           f"{did_you_mean(str(tok), list(container))}; use +{join_path(tokens)}=... to add it")
            container[tok] = {}
            smap[join_path(walked + [tok])] = loc
        container = container[tok]
        walked.append(tok)
    last = _step(container, tokens[-1], walked)
    path = walked + [last]
    name = join_path(path)
    if isinstance(container, list):
        exists = int(last) < len(container)
        if not exists and not (op in ("+", "++") and last == len(container)):
            raise _Bad(f"index {last} out of range for {join_path(walked)!r} ({len(container)} items)")
    else:
        exists = last in container
    if op == "~":
        if not exists:
            raise _Bad(f"cannot delete {name!r}: it is not in the recipe")
        if has_value and container[last] != value:
            raise _Bad(f"cannot delete {name!r}: its value {container[last]!r} is not {value!r}")
        del container[last]
        drop_subtree(smap, name)
        if isinstance(container, list):
            _renumber(smap, walked, int(last))
        return
    if op == "" and not exists and not known(path):
        options = list(container) if isinstance(container, dict) else []
        raise _Bad(f"key {name!r} is not in the recipe{did_you_mean(str(last), options)}; "
                   f"use +{name}=... to add it")
    if op == "+" and exists:
        raise _Bad(f"key {name!r} is already in the recipe; use {name}=... or ++{name}=... to set it")
    value = copy.deepcopy(value)
    if isinstance(container, list) and not exists:
        container.append(value)
    else:
        container[last] = value
    drop_subtree(smap, name)
    _record(smap, path, value, loc)


def apply_overrides(data: dict, smap: SourceMap, overrides: Sequence[str | Override],
                    known: Callable[[list], bool] = lambda tokens: False) -> list[RecipeIssue]:
    """Apply overrides in order to ``data`` and ``smap`` (both mutated); returns the problems found.

    ``known(tokens)``: whether a missing key may still be set with plain ``key=value`` (keys the
    schema defines, whose defaults the recipe did not spell out); unknown keys need ``+``.
    """
    issues: list[RecipeIssue] = []
    for item in as_overrides(overrides):
        loc = item.location or Location(CLI_FILE, 1, 1)
        match = _OVERRIDE.match(item.text.strip() if "=" not in item.text else item.text.lstrip())
        if not match:
            issues.append(RecipeIssue(loc, "$", f"cannot parse override {item.text!r}; expected key=value, "
                                                "+key=value, ++key=value or ~key"))
            continue
        op, key, raw = match.group(1) or "", match.group(2), match.group(3)
        tokens = split_path(key)
        if raw is None and op != "~":
            issues.append(RecipeIssue(loc, json_path(key), f"override {item.text!r} needs a value: {key}=VALUE"))
            continue
        try:
            value = parse_value(raw) if raw is not None else None
        except yaml.YAMLError as exc:
            issues.append(RecipeIssue(loc, json_path(key), f"cannot parse value {raw!r} as YAML: "
                                                           f"{getattr(exc, 'problem', exc)}"))
            continue
        try:
            _apply_one(data, smap, op, tokens, value, raw is not None, loc, known)
        except _Bad as exc:
            issues.append(RecipeIssue(loc, json_path(key), str(exc)))
    return issues
