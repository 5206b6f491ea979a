"""Cache housekeeping: list every entry (artifacts, blobs, writers' temp entries), remove, evict.

Every delete goes through ``safe_rmtree`` (the path must lie inside the cache root) and skips
entries whose lock a writer holds. ``gc`` evicts least recently used entries until the cache fits
a size budget.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from filelock import Timeout

from rac.errors import UsageError
from rac.pipeline.cache_entry import MANIFEST, ArtifactInfo, CacheStore
from rac.pipeline.paths import UnsafePathError, safe_rmtree

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``"20G"``, ``"512MiB"``, ``"1.5T"``, ``"1000"`` -> bytes (K/M/G/T are powers of 1024)."""
    match = _SIZE.match(str(text))
    if not match:
        raise UsageError(f"--max-size {text!r}: expected a size such as 500M, 20G or 1.5T")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _size(path: Path) -> int:
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _folders(base: Path, name: str | None) -> list[Path]:
    """``base/name`` (or every folder of ``base``); a name that is a path is refused."""
    if name is not None and (not _NAME.fullmatch(name) or ".." in name):
        raise UnsafePathError(f"{name!r} is not a stage name or blob kind")
    if name is not None:
        return [base / name] if (base / name).is_dir() else []
    return sorted(p for p in base.glob("*") if p.is_dir()) if base.is_dir() else []


def partial_entries(cache: CacheStore, folder: Path, key: str | None = None) -> list[ArtifactInfo]:
    """Temp entries (``.<key>.*.tmp``) of writers in one artifacts/<stage> or blobs/<kind> folder."""
    kind = "artifact" if folder.parent.name == "artifacts" else "blob"
    out: list[ArtifactInfo] = []
    for path in sorted(folder.glob(".*.tmp")) if folder.is_dir() else []:
        entry_key = path.name[1:].split(".")[0]
        if key is not None and entry_key != key:
            continue
        held = cache.is_held(kind, folder.name, entry_key)
        out.append(ArtifactInfo(folder.name, entry_key, path, _size(path), _mtime(path), False,
                                "partial", _mtime(path), held))
    return out


def artifact_entries(cache: CacheStore, stage: str | None = None) -> list[ArtifactInfo]:
    """Stage artifacts; ``valid`` means the manifest lists files (checksums are checked on lookup)."""
    infos: list[ArtifactInfo] = []
    for stage_dir in _folders(cache.root / "artifacts", stage):
        for path in sorted(stage_dir.glob("*")):
            if path.name.startswith(".") or not path.is_dir():
                continue
            manifest = path / MANIFEST
            try:
                created = float(json.loads(manifest.read_text())["created"])
            except (OSError, ValueError, KeyError, TypeError):
                created = _mtime(path)
            infos.append(ArtifactInfo(stage_dir.name, path.name, path, _size(path), created,
                                      cache.manifest_files(path) is not None, "artifact",
                                      _mtime(manifest) if manifest.exists() else _mtime(path)))
    return infos


def blob_entries(cache: CacheStore, kind: str | None = None) -> list[ArtifactInfo]:
    """Blobs (data + meta file pairs); a lone half of a pair is listed as invalid."""
    infos: list[ArtifactInfo] = []
    for kind_dir in _folders(cache.root / "blobs", kind):
        keys = sorted({p.name.split(".")[0] for p in kind_dir.glob("*")
                       if not p.name.startswith(".") and p.suffix in (".safetensors", ".json")})
        for key in keys:
            data, meta = kind_dir / f"{key}.safetensors", kind_dir / f"{key}.json"
            infos.append(ArtifactInfo(kind_dir.name, key, data, _size(data) + _size(meta), _mtime(data),
                                      data.is_file() and meta.is_file(), "blob", _mtime(meta)))
    return infos


def entries(cache: CacheStore, name: str | None = None) -> list[ArtifactInfo]:
    """Every entry of stage or blob kind ``name`` (or all): artifacts, blobs and temp entries."""
    out = artifact_entries(cache, name) + blob_entries(cache, name)
    for base in (cache.root / "artifacts", cache.root / "blobs"):
        for folder in _folders(base, name):
            out += partial_entries(cache, folder)
    return out


def _remove_one(cache: CacheStore, info: ArtifactInfo) -> bool:
    """Delete one entry under its lock; False when a writer holds it."""
    if info.kind == "partial":
        if info.held:
            return False
        safe_rmtree(info.path, cache.root)
        return True
    lock = cache.lock(info.kind, info.stage, info.fingerprint)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return False
    try:
        if info.kind == "blob":
            for path in (info.path, info.path.with_suffix(".json")):
                if path.exists():
                    safe_rmtree(path, cache.root)
        else:
            cache._discard(info.path)
    finally:
        lock.release()
    return True


def remove_entries(cache: CacheStore, name: str | None = None, prefix: str | None = None) -> int:
    """Remove the entries of ``name`` whose key starts with ``prefix``; returns how many."""
    removed = 0
    for info in entries(cache, name):
        if prefix and not info.fingerprint.startswith(prefix):
            continue
        removed += _remove_one(cache, info)
    return removed


def gc(cache: CacheStore, max_bytes: int) -> tuple[int, int, int]:
    """Clean stale temp entries, then evict least recently used entries until the cache holds at most
    ``max_bytes``. Returns (entries removed, bytes freed, bytes kept)."""
    removed = freed = 0
    for info in entries(cache):
        if info.kind == "partial" and _remove_one(cache, info):
            removed, freed = removed + 1, freed + info.size_bytes
    live = sorted((i for i in entries(cache) if i.kind != "partial"), key=lambda i: i.last_used)
    total = sum(i.size_bytes for i in live)
    for info in live:
        if total <= max_bytes:
            break
        if _remove_one(cache, info):
            total -= info.size_bytes
            removed, freed = removed + 1, freed + info.size_bytes
    return removed, freed, total
