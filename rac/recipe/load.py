"""Load a recipe: ``base:`` chains, overlays, CLI overrides and ``${...}`` interpolation, with a source map.

Resolution order: the deepest ``base`` first, each including file merged on top (mappings merge
key by key, everything else - lists included - is replaced), then overlays (grid cells), then
overrides, then OmegaConf interpolation. Interpolation may use only the pure resolvers in
``ALLOWED_RESOLVERS`` (no other resolver, whoever registered it, runs); ``${oc.env:VAR}`` also works
when the recipe opts in with ``run.allow_env: true``, and what it read is kept out of run
directories (``LoadedRecipe.redacted``). Relative input paths (data ``path`` sources and local
``model.id``) are made absolute in ``data``, relative to the file that set them (``<cli>``: the
working directory); output paths stay relative to the working directory.
"""

from __future__ import annotations

import copy
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
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
ALLOWED_RESOLVERS = ("oc.select", "oc.decode", "oc.create", "oc.dict.keys", "oc.dict.values")  # pure: no I/O
ENV_RESOLVER = "oc.env"
_ENV_NAME = re.compile(r"\$\{\s*oc\.env\s*:\s*['\"]?([^,'\"}\s]+)")
_RESOLVER_LOCK = threading.Lock()


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
    env: EnvReads = field(default_factory=lambda: EnvReads({}, {}))

    def locate(self, dotted: str) -> Location:
        """Where ``dotted`` (or its nearest ancestor that was set) comes from."""
        return locate(self.source_map, dotted, Location(str(self.path), 1, 1))

    def redacted(self, data: dict | None = None) -> dict:
        """``data`` (default ``self.data``) with every value read through ``${oc.env:...}`` put back as
        that text: what may be written into run directories."""
        return self.env.redact(self.data if data is None else data)


@dataclass(frozen=True)
class EnvReads:
    """What ``${oc.env:...}`` interpolations read: the unresolved text of each value that used one
    (by path), and the variables' values (to catch copies made through other interpolations)."""

    texts: dict[tuple, str]
    values: dict[str, str]

    def redact(self, data: dict) -> dict:
        if not self.texts and not self.values:
            return data
        out = copy.deepcopy(data)
        for tokens, text in self.texts.items():
            node: Any = out
            try:
                for tok in tokens[:-1]:
                    node = node[tok]
                if isinstance(node, (dict, list)):
                    node[tokens[-1]] = text
            except (KeyError, IndexError, TypeError):
                continue
        return self._scrub(out)

    def _scrub(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._scrub(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._scrub(v) for v in value]
        if isinstance(value, str):
            for name, secret in self.values.items():
                if secret and (secret in value if len(secret) >= 4 else value == secret):
                    value = value.replace(secret, "${oc.env:" + name + "}")
        return value


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


@contextmanager
def _allowed_resolvers(allow_env: bool) -> Iterator[None]:
    """Only OmegaConf's own pure resolvers (plus ``oc.env`` when allowed) exist while resolving."""
    from omegaconf.basecontainer import BaseContainer
    from omegaconf.omegaconf import register_default_resolvers

    names = ALLOWED_RESOLVERS + ((ENV_RESOLVER,) if allow_env else ())
    with _RESOLVER_LOCK:
        saved = BaseContainer._resolvers
        try:
            BaseContainer._resolvers = {}
            register_default_resolvers()  # pristine implementations, whatever was registered before
            BaseContainer._resolvers = {n: f for n, f in BaseContainer._resolvers.items() if n in names}
            yield
        finally:
            BaseContainer._resolvers = saved


def _resolver_message(exc: Exception) -> str:
    from omegaconf.errors import UnsupportedInterpolationType

    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if not isinstance(exc, UnsupportedInterpolationType):
        return reason
    name = reason.rsplit(" ", 1)[-1].strip("'\"")
    if name == ENV_RESOLVER:
        return ("${oc.env:...} reads the environment; allow it with `run.allow_env: true` in the recipe "
                "(values read are never written to run directories)")
    return f"resolver {name!r} is not allowed in recipes (allowed: {', '.join(ALLOWED_RESOLVERS)}, and {ENV_RESOLVER} " \
           "with run.allow_env: true)"


def _allow_env(data: dict) -> bool:
    run = data.get("run")
    return isinstance(run, dict) and run.get("allow_env") is True


def _resolve(data: dict, smap: SourceMap, default: Location) -> tuple[dict, EnvReads]:
    """Resolve ``${...}`` interpolations with OmegaConf (allow-listed resolvers only); failures are
    reported where they were set. Also returns what ``${oc.env:...}`` read (see :class:`EnvReads`)."""
    cfg = OmegaConf.create(data)
    issues: list[RecipeIssue] = []
    env_texts: dict[tuple, str] = {}
    env_names: set[str] = set()
    allow_env = _allow_env(data)

    def visit(value: Any, tokens: list[PathToken]) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                visit(sub, tokens + [key])
        elif isinstance(value, list):
            for i, sub in enumerate(value):
                visit(sub, tokens + [i])
        elif isinstance(value, str) and "${" in value:
            if ENV_RESOLVER in value:
                env_texts[tuple(tokens)] = value
                env_names.update(_ENV_NAME.findall(value))
            node: Any = cfg
            try:
                for tok in tokens:
                    node = node[tok]
            except Exception as exc:  # noqa: BLE001 - any resolver failure is a recipe error here
                path = join_path(tokens)
                issues.append(RecipeIssue(locate(smap, path, default), json_path(path),
                                          f"cannot resolve {value!r}: {_resolver_message(exc)}"))

    with _allowed_resolvers(allow_env):
        visit(data, [])
        if issues:
            raise RecipeError(issues)
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True)
        except Exception as exc:  # noqa: BLE001
            raise RecipeError([RecipeIssue(default, "$", f"cannot resolve the recipe: {_resolver_message(exc)}")]) from None
    assert isinstance(resolved, dict)
    values = {name: os.environ[name] for name in sorted(env_names) if os.environ.get(name)}
    return resolved, EnvReads(env_texts, values)


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
    raw, env = _resolve(data, smap, default)
    full = fill_defaults(raw)
    _absolutize(full, smap, default)
    return LoadedRecipe(path=Path(display), data=full, raw=raw, source_map=smap,
                        files=[Path(f) for f in files], overrides=tuple(o.text for o in items), env=env)
