"""YAML with positions: parse a recipe file into plain data plus a source map of dotted paths.

A source map is ``dict[str, Location]`` keyed by dotted paths such as ``prune.scopes[0].sparsity``
(``""`` is the whole document). Scalars map to the value's position, mappings and lists to the
position of the key that introduced them, list items to the item's first token.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Union

import yaml

from rac.recipe.errors import Location, RecipeError, RecipeIssue, json_path

SourceMap = dict[str, Location]
PathToken = Union[str, int]  # noqa: UP007 - runtime alias, Python 3.10

_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"


class RecipeLoader(yaml.SafeLoader):
    """SafeLoader without timestamp parsing (dates stay strings, which OmegaConf can hold)."""


RecipeLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in (_TIMESTAMP, _INT, _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# YAML 1.1 reads "2:4" as the base-60 integer 124; recipes need it as the N:M string.
RecipeLoader.add_implicit_resolver(
    _INT, re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"))
RecipeLoader.add_implicit_resolver(  # also YAML 1.2 floats such as 1e-3
    _FLOAT, re.compile(r"^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+"
                       r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def join_path(tokens: tuple[PathToken, ...] | list[PathToken]) -> str:
    """``("a", "b", 0, "c")`` -> ``"a.b[0].c"``."""
    out = ""
    for tok in tokens:
        if isinstance(tok, int):
            out += f"[{tok}]"
        else:
            out += f".{tok}" if out else str(tok)
    return out


_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def split_path(path: str) -> list[PathToken]:
    """``"a.b[0].c"`` -> ``["a", "b", 0, "c"]`` (``a.b.0`` keeps ``"0"``; the caller decides)."""
    tokens: list[PathToken] = []
    for name, index in _TOKEN.findall(path):
        tokens.append(int(index) if index else name)
    return tokens


def under(path: str, prefix: str) -> bool:
    """True when ``path`` is ``prefix`` or lies inside it."""
    if not prefix:
        return True
    return path == prefix or path.startswith((prefix + ".", prefix + "["))


def drop_subtree(smap: SourceMap, prefix: str, keep_root: bool = False) -> None:
    """Remove ``prefix`` (unless ``keep_root``) and everything below it from a source map."""
    for key in [k for k in smap if under(k, prefix)]:
        if not (keep_root and key == prefix):
            del smap[key]


def locate(smap: SourceMap, path: str, default: Location) -> Location:
    """Location of ``path`` or of its nearest ancestor that has one."""
    tokens = split_path(path)
    while True:
        key = join_path(tokens)
        if key in smap:
            return smap[key]
        if not tokens:
            return default
        tokens.pop()


def _mark(mark: yaml.Mark | None, file: str) -> Location:
    if mark is None:
        return Location(file, 1, 1)
    return Location(file, mark.line + 1, mark.column + 1)


def _walk(node: yaml.Node, prefix: list[PathToken], here: Location, file: str,
          smap: SourceMap, issues: list[RecipeIssue]) -> None:
    path = join_path(prefix)
    smap[path] = here
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key_loc = _mark(key_node.start_mark, file)
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                issues.append(RecipeIssue(key_loc, json_path(path),
                                          f"keys must be strings, got {key_node.value!r}"))
                continue
            key = key_node.value
            if key in seen:
                issues.append(RecipeIssue(key_loc, json_path(join_path(prefix + [key])),
                                          f"duplicate key {key!r} (first set on line {seen[key]})"))
            seen[key] = key_loc.line
            scalar = isinstance(value_node, yaml.ScalarNode)
            loc = _mark(value_node.start_mark, file) if scalar else key_loc
            _walk(value_node, prefix + [key], loc, file, smap, issues)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, prefix + [i], _mark(item.start_mark, file), file, smap, issues)


def parse_yaml(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML text; returns (data, source map). Syntax errors -> RecipeError at file:line:col."""
    loader = RecipeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(p) for p in (exc.context, exc.problem) if p)
        raise RecipeError([RecipeIssue(_mark(mark, file), "$", f"YAML syntax error: {problem}")]) from None
    except yaml.YAMLError as exc:
        raise RecipeError([RecipeIssue(Location(file, 1, 1), "$", f"YAML error: {exc}")]) from None
    finally:
        loader.dispose()
    smap: SourceMap = {}
    issues: list[RecipeIssue] = []
    if node is not None:
        _walk(node, [], _mark(node.start_mark, file), file, smap, issues)
    else:
        smap[""] = Location(file, 1, 1)
    if issues:
        raise RecipeError(issues)
    return data, smap


def read_mapping(path: Path, display: str, including: Location | None = None,
                 what: str = "recipe") -> tuple[dict, SourceMap]:
    """Read a YAML file that must hold a mapping (an empty file is an empty mapping).

    ``including`` is where the file was referenced (a ``base:`` line, a grid file); a missing file
    is reported there.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
            UnicodeDecodeError) as exc:
        reason = "not found" if isinstance(exc, (FileNotFoundError, NotADirectoryError)) else str(exc)
        where = including or Location(display, 1, 1)
        raise RecipeError([RecipeIssue(where, "$", f"{what} file {display!r} {reason}"
                                       if reason == "not found" else f"cannot read {display!r}: {reason}")]) from None
    data, smap = parse_yaml(text, display)
    if data is None:
        return {}, {"": Location(display, 1, 1)}
    if not isinstance(data, dict):
        raise RecipeError([RecipeIssue(smap.get("", Location(display, 1, 1)), "$",
                                       f"a {what} must be a YAML mapping, got {type(data).__name__}")])
    return data, smap
