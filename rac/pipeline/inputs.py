"""What a fingerprint hashes beyond the recipe keys: stage code, data content and the device kind.

* Code: the source of the stage's module and every rac module it imports, transitively (imports
  inside functions and modules named by string, like the engine registry's ``"rac.engines.hf"``,
  included, read with ``ast``; ``rac.pipeline`` / ``rac.ui`` / CLI orchestration excluded), so
  editing the Hessian or generation code changes the fingerprints of the stages that run it.
* Data: local files by sha256 (directories file by file), bundled data sets by their file's hash,
  hub data sets (``hf:``) by revision: the pinned ``revision`` or the current commit resolved
  through ``huggingface_hub``; one that cannot be resolved is keyed ``@unresolved`` and reported.
* Device kind: CPU model or GPU name, for stages whose results are timings.

File hashes are cached by (path, size, mtime) in memory and in ``<cache>/file-hashes.json``, so a
large calibration file is hashed once.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import platform
import re
import sys
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

import rac
from rac.hashing import json_digest
from rac.pipeline.cache import atomic_write_json, file_sha256

log = logging.getLogger(__name__)
RAC_ROOT = Path(rac.__file__).resolve().parent
EXCLUDED_MODULES = ("rac.pipeline", "rac.ui", "rac.cli", "rac.commands")
HASHES_FILE = "file-hashes.json"
UNRESOLVED = "unresolved"
_DOTTED = re.compile(r"^rac(\.[A-Za-z_][A-Za-z0-9_]*)+$")

_memory: dict[str, str] = {}


class FileHashes:
    """sha256 of files, cached by (path, size, mtime_ns); ``save`` persists new entries (best effort)."""

    def __init__(self, store: Path | None = None) -> None:
        self.store = store
        self.dirty = False
        if store is not None and store.is_file():
            try:
                _memory.update({k: v for k, v in json.loads(store.read_text()).items() if isinstance(v, str)})
            except (OSError, ValueError, AttributeError):
                log.warning("ignoring unreadable %s", store)

    def file(self, path: Path) -> str:
        stat = path.stat()
        key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        if key not in _memory:
            _memory[key] = file_sha256(path)
            self.dirty = True
        return _memory[key]

    def path(self, path: Path) -> str:
        """Digest of a file, or of a directory's files (relative names included); ``missing`` if absent."""
        if path.is_file():
            return "sha256:" + self.file(path)
        if path.is_dir():
            parts = [(str(p.relative_to(path)), self.file(p)) for p in sorted(path.rglob("*")) if p.is_file()]
            return "dir-sha256:" + json_digest(parts)
        return "missing"

    def save(self) -> None:
        """Persist the hashes of files that still exist unchanged (stale entries are dropped)."""
        if self.store is None or not self.dirty:
            return
        try:
            atomic_write_json(self.store, {k: v for k, v in _memory.items() if _current(k)})
            self.dirty = False
        except OSError as exc:
            log.warning("cannot save file hashes to %s: %s", self.store, exc)


def _current(key: str) -> bool:
    path, size, mtime = key.rsplit("|", 2)
    try:
        stat = os.stat(path)
    except OSError:
        return False
    return stat.st_size == int(size) and stat.st_mtime_ns == int(mtime)


# -- code ---------------------------------------------------------------------------------------------
def _module_file(module: str, root: Path) -> Path | None:
    if module != "rac" and not module.startswith("rac."):
        spec_file = getattr(sys.modules.get(module), "__file__", None)
        return Path(spec_file) if spec_file else None
    parts = module.split(".")[1:]
    base = root.joinpath(*parts) if parts else root
    for candidate in (base.with_suffix(".py") if parts else None, base / "__init__.py"):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _excluded(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in EXCLUDED_MODULES)


_imports_memo: dict[tuple, set[str]] = {}


def _rac_imports(file: Path, root: Path) -> set[str]:
    """rac modules a source file imports anywhere (``from rac.x import y`` adds rac.x.y when y is a module)."""
    stat = file.stat()
    memo = (str(file), stat.st_size, stat.st_mtime_ns, str(root))
    if memo not in _imports_memo:
        _imports_memo[memo] = _parse_imports(file, root)
    return _imports_memo[memo]


def _parse_imports(file: Path, root: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name == "rac" or a.name.startswith("rac.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and (node.module == "rac" or node.module.startswith("rac.")):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names
                      if _module_file(f"{node.module}.{a.name}", root) is not None}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.match(node.value) \
                and _module_file(node.value, root) is not None:
            found.add(node.value)  # imported by name, e.g. the engine registry's "rac.engines.hf"
    return found


def code_files(module: str) -> list[Path]:
    """Source files of ``module`` and the rac modules it imports, transitively (sorted)."""
    root = RAC_ROOT
    seen: set[str] = set()
    files: set[Path] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        if name in seen or (name != module and _excluded(name)):
            continue
        seen.add(name)
        file = _module_file(name, root)
        if file is None:
            continue
        files.add(file)
        todo.extend(_rac_imports(file, root))
    return sorted(files)


def _display(file: Path) -> str:
    try:
        return str(file.relative_to(RAC_ROOT.parent))
    except ValueError:
        return file.name


def code_inputs(module: str, hashes: FileHashes | None = None) -> dict[str, str]:
    """{source file: sha256 prefix} of the code a stage runs."""
    hashes = hashes or FileHashes()
    return {_display(f): hashes.file(f)[:16] for f in code_files(module)}


def module_code_digest(module: str) -> str:
    """One digest of :func:`code_inputs` (used in sub-artifact keys such as Hessian blobs)."""
    return json_digest(code_inputs(module), 16)


# -- data ---------------------------------------------------------------------------------------------
@lru_cache(maxsize=256)
def resolve_hub_revision(name: str) -> str | None:
    """Current commit of a hub data set, or None offline / unknown (never raises)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return None
    try:
        from huggingface_hub import HfApi

        return HfApi().dataset_info(name, timeout=5).sha
    except Exception as exc:  # noqa: BLE001 - offline, unknown, auth: all mean "unresolved"
        log.info("cannot resolve the revision of hub data set %s: %s", name, exc)
        return None


def _sources(value: Any, key: str) -> Iterator[tuple[str, dict]]:
    """(dotted key, mapping) of every data source (a mapping with ``dataset`` or ``path``) in ``value``."""
    if isinstance(value, dict):
        if isinstance(value.get("path"), str) or isinstance(value.get("dataset"), str):
            yield key, value
            return
        for sub, item in value.items():
            yield from _sources(item, f"{key}.{sub}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _sources(item, f"{key}[{index}]")


def data_inputs(reads: dict[str, Any], hashes: FileHashes,
                resolver: Callable[[str], str | None]) -> tuple[dict[str, str], list[str]]:
    """({source key: content identity}, warnings) for the data sources among a stage's read values."""
    from rac.calibration.datasets import BUILTIN_DATASETS

    found: dict[str, str] = {}
    warnings: list[str] = []
    for read, value in reads.items():
        for key, source in _sources(value, read):
            path, dataset = source.get("path"), source.get("dataset")
            if isinstance(path, str) and path.startswith("hf:"):
                name = path[len("hf:"):].split(":")[0]
                revision = source.get("revision") or resolver(name)
                if revision is None:
                    revision = UNRESOLVED
                    warnings.append(f"{key}: hub data set {name} has no `revision` and it cannot be resolved "
                                    "now (offline?); cached results are keyed by its name only until you pin one")
                found[key] = f"{path}@{revision}"
            elif isinstance(path, str):
                found[key] = hashes.path(Path(path))
            elif dataset in BUILTIN_DATASETS:
                found[key] = f"{dataset}:" + hashes.path(BUILTIN_DATASETS[dataset].path)
    return found, warnings


# -- device -------------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def device_kind(device: str | None) -> str:
    """What kind of machine ``run.device`` runs on: ``cpu: <model>`` or ``cuda: <GPU name>``."""
    name = (device or "auto").strip()
    if name != "cpu":
        try:
            import torch

            if torch.cuda.is_available():
                index = int(name.split(":", 1)[1]) if name.startswith("cuda:") else 0
                return f"cuda: {torch.cuda.get_device_name(index)}"
        except (ImportError, ValueError, RuntimeError, AssertionError):
            pass
    return f"cpu: {cpu_model()}"
