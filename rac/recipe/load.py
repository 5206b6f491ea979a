"""Load a recipe: ``base:`` chains, overlays, CLI overrides and ``${...}`` interpolation, with a source map.

Resolution order: the deepest ``base`` first, each including file merged on top (mappings merge
key by key, everything else - lists included - is replaced), then overlays (grid cells), then
overrides, then OmegaConf interpolation. Relative input paths (data ``path`` sources and local
``model.id``) are made absolute in ``data``, relative to the file that set them (``<cli>``: the
working directory); output paths stay relative to the working directory.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from omegaconf import OmegaConf

from rac.recipe.errors import CLI_FILE, Location, RecipeError, RecipeIssue, json_path
from rac.recipe.overrides import Override, apply_overrides, as_overrides
from rac.recipe.schema import fill_defaults, schema_knows
from rac.recipe.source import PathToken, SourceMap, drop_subtree, join_path, locate, read_mapping, under

PathLike = Union[str, "os.PathLike[str]"]
_PLAIN = (str, int, float, bool, type(None))


@dataclass
class LoadedRecipe:
    """A resolved recipe with provenance.

    ``data``: plain dict, interpolations resolved, schema defaults filled (what stages read).
    ``raw``: resolved but without defaults (what the user wrote). ``source_map``: dotted path ->
    Location of the last file (or ``<cli>`` override) that set it. ``files``: the base chain in
    merge order (deepest base first, the recipe itself, then overlays and their bases).
    """

    path: Path
    data: dict
    raw: dict
    source_map: SourceMap
    files: list[Path] = field(default_factory=list)
    overrides: tuple[str, ...] = ()

    def locate(self, dotted: str) -> Location:
        """Where ``dotted`` (or its nearest ancestor that was set) comes from."""
        return locate(self.source_map, dotted, Location(str(self.path), 1, 1))


def looks_local(value: Any) -> bool:
    """True for strings that look like a local path rather than a hub id or builtin alias."""
    return isinstance(value, str) and (
        value.startswith(("./", "../", "/", "~")) or value.endswith(".gguf") or value in (".", "..")
    )


def _check_plain(value: Any, tokens: list[PathToken], smap: SourceMap, default: Location,
                 issues: list[RecipeIssue]) -> None:
    """Reject YAML values OmegaConf cannot hold (sets, binary...) with their location."""
    if isinstance(value, dict):
        for key, sub in value.items():
            _check_plain(sub, tokens + [key], smap, default, issues)
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            _check_plain(sub, tokens + [i], smap, default, issues)
    elif not isinstance(value, _PLAIN):
        path = join_path(tokens)
        issues.append(RecipeIssue(locate(smap, path, default), json_path(path),
                                  f"unsupported value of type {type(value).__name__}"))


def _merge(dst: dict, dst_map: SourceMap, src: dict, src_map: SourceMap, tokens: list[PathToken]) -> None:
    """Merge ``src`` over ``dst`` in place (mappings recurse, anything else replaces), maps too."""
    for key, value in src.items():
        path = join_path(tokens + [key])
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            if path in src_map:
                dst_map[path] = src_map[path]
            _merge(dst[key], dst_map, value, src_map, tokens + [key])
            continue
        dst[key] = copy.deepcopy(value)
        drop_subtree(dst_map, path)
        dst_map.update({k: v for k, v in src_map.items() if under(k, path)})


def _display_join(including: str, target: str) -> str:
    target = os.path.expanduser(target)
    return os.path.normpath(os.path.join(os.path.dirname(including), target))


def _load_chain(display: str, stack: list[tuple[str, str]], including: Location | None,
                what: str) -> tuple[dict, SourceMap, list[str]]:
    """Read ``display`` and its ``base:`` chain; returns merged data, source map and files."""
    real = os.path.realpath(display)
    data, smap = read_mapping(Path(display), display, including, what)
    base = data.pop("base", None)
    if "base" not in smap:
        return data, smap, [display]
    base_loc = smap.pop("base")
    if not isinstance(base, str) or not base:
        raise RecipeError([RecipeIssue(base_loc, "$.base", "base must be a path (string) relative to this file")])
    target = _display_join(display, base)
    chain = stack + [(real, display)]
    if os.path.realpath(target) in [r for r, _ in chain]:
        names = [d for _, d in chain] + [target]
        raise RecipeError([RecipeIssue(base_loc, "$.base", "base cycle: " + " -> ".join(names))])
    merged, merged_map, files = _load_chain(target, chain, base_loc, "base recipe")
    _merge(merged, merged_map, data, smap, [])
    merged_map[""] = smap.get("", Location(display, 1, 1))
    return merged, merged_map, files + [display]


def _resolve(data: dict, smap: SourceMap, default: Location) -> dict:
    """Resolve ``${...}`` interpolations with OmegaConf; failures are reported where they were set."""
    cfg = OmegaConf.create(data)
    issues: list[RecipeIssue] = []

    def visit(value: Any, tokens: list[PathToken]) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                visit(sub, tokens + [key])
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                visit(sub, tokens + [i])
        elif isinstance(value, str) and "${" in value:
            node: Any = cfg
            try:
                for tok in tokens:
                    node = node[tok]
            except Exception as exc:  # noqa: BLE001 - any resolver failure is a recipe error here
                path = join_path(tokens)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                issues.append(RecipeIssue(locate(smap, path, default), json_path(path),
                                          f"cannot resolve {value!r}: {reason}"))

    visit(data, [])
    if issues:
        raise RecipeError(issues)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
    except Exception as exc:  # noqa: BLE001
        raise RecipeError([RecipeIssue(default, "$", f"cannot resolve the recipe: {exc}")]) from None
    assert isinstance(resolved, dict)
    return resolved


def _absolutize(data: dict, smap: SourceMap, default: Location) -> None:
    """Make relative input paths absolute, relative to the file that set them."""

    def fix(container: Any, key: str, path: str, only_local: bool) -> None:
        if not isinstance(container, dict):
            return
        value = container.get(key)
        if not isinstance(value, str) or value.startswith("hf:") or (only_local and not looks_local(value)):
            return
        value = os.path.expanduser(value)
        if not os.path.isabs(value):
            loc = locate(smap, path, default)
            base = os.getcwd() if loc.file == CLI_FILE else os.path.dirname(os.path.abspath(loc.file))
            value = os.path.normpath(os.path.join(base, value))
        container[key] = value

    fix(data.get("model"), "id", "model.id", True)
    calibration = data.get("calibration")
    if isinstance(calibration, dict):
        rollout = calibration.get("rollout")
        if isinstance(rollout, dict):
            fix(rollout.get("model"), "id", "calibration.rollout.model.id", True)
        for i, source in enumerate(calibration.get("sources") or [] if isinstance(calibration.get("sources"), list) else []):
            fix(source, "path", f"calibration.sources[{i}].path", False)
    evaluate = data.get("evaluate")
    tasks = evaluate.get("tasks") if isinstance(evaluate, dict) else None
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        fix(task, "path", f"evaluate.tasks[{i}].path", False)


def load_recipe(path: PathLike, overrides: Sequence[str | Override] = (),
                overlays: Sequence[PathLike] = ()) -> LoadedRecipe:
    """Load and resolve a recipe (no validation; see ``validate.load_and_validate``).

    ``overlays`` are partial recipes merged on top in order (each may have its own ``base``);
    ``overrides`` are Hydra-style strings (or :class:`Override` with a location). Raises
    RecipeError for unreadable files, YAML errors, ``base`` cycles, bad overrides and
    interpolation failures, each with file:line:col.
    """
    display = os.fspath(path)
    data, smap, files = _load_chain(display, [], None, "recipe")
    for overlay in overlays:
        o_data, o_map, o_files = _load_chain(os.fspath(overlay), [], None, "overlay")
        o_map.pop("", None)
        _merge(data, smap, o_data, o_map, [])
        files += o_files
    default = Location(display, 1, 1)
    items = as_overrides(overrides)
    issues = apply_overrides(data, smap, items, schema_knows)
    _check_plain(data, [], smap, default, issues)
    if issues:
        raise RecipeError(issues)
    raw = _resolve(data, smap, default)
    full = fill_defaults(raw)
    _absolutize(full, smap, default)
    return LoadedRecipe(path=Path(display), data=full, raw=raw, source_map=smap,
                        files=[Path(f) for f in files], overrides=tuple(o.text for o in items))
