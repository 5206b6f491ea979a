"""Content-addressed artifact cache with atomic writes and checksum verification.

Layout under the cache root (``$RAC_CACHE``, default ``~/.cache/rac``)::

    artifacts/<stage>/<fingerprint>/...files...  + _manifest.json (sha256 of every file)
    blobs/<kind>/<key>.safetensors                + <key>.json (meta + sha256)

An artifact is written into a temporary sibling directory and renamed into place, so a reader
never sees a partial artifact; a manifest mismatch (corruption, truncation) counts as a miss.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
MANIFEST = "_manifest.json"


def default_cache_root() -> Path:
    return Path(os.environ.get("RAC_CACHE") or Path.home() / ".cache" / "rac").expanduser()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temp file and rename (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any, sort_keys: bool = True) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=str) + "\n")


@dataclass(frozen=True)
class ArtifactInfo:
    stage: str
    fingerprint: str
    path: Path
    size_bytes: int
    created: float
    valid: bool


class Cache:
    """Artifacts of stages (directories) and blobs (single safetensors files) by content key."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_root()

    # -- stage artifacts -------------------------------------------------------------------------
    def artifact_path(self, stage: str, fingerprint: str) -> Path:
        return self.root / "artifacts" / stage / fingerprint

    def verify(self, path: Path) -> bool:
        """True when the manifest exists and every listed file has its recorded hash."""
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            return False
        try:
            manifest = json.loads(manifest_path.read_text())
            files: dict[str, str] = manifest["files"]
        except (ValueError, KeyError, TypeError):
            return False
        for rel, expected in files.items():
            target = path / rel
            if not target.is_file() or file_sha256(target) != expected:
                return False
        return True

    def lookup(self, stage: str, fingerprint: str) -> Path | None:
        """The artifact dir on a valid hit; a corrupt or partial entry is removed and reported as a miss."""
        path = self.artifact_path(stage, fingerprint)
        if not path.exists():
            return None
        if self.verify(path):
            return path
        log.warning("cache entry %s/%s is corrupt or partial; recomputing", stage, fingerprint)
        shutil.rmtree(path, ignore_errors=True)
        return None

    def exists(self, stage: str, fingerprint: str) -> bool:
        path = self.artifact_path(stage, fingerprint)
        return (path / MANIFEST).is_file()

    @contextmanager
    def writing(self, stage: str, fingerprint: str, meta: dict | None = None) -> Iterator[Path]:
        """Yield an empty temp dir; on clean exit seal it with a manifest and rename into place."""
        final = self.artifact_path(stage, fingerprint)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{fingerprint}.", suffix=".tmp"))
        try:
            yield tmp
            self.seal(tmp, stage, fingerprint, meta or {})
            if final.exists():  # a concurrent writer won, or a corrupt leftover
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    @staticmethod
    def seal(path: Path, stage: str, fingerprint: str, meta: dict) -> None:
        files = {
            str(p.relative_to(path)): file_sha256(p)
            for p in sorted(path.rglob("*"))
            if p.is_file() and p.name != MANIFEST
        }
        atomic_write_json(
            path / MANIFEST,
            {"stage": stage, "fingerprint": fingerprint, "created": time.time(), "files": files, "meta": meta},
        )

    def list(self, stage: str | None = None) -> list[ArtifactInfo]:
        base = self.root / "artifacts"
        stages = [base / stage] if stage else sorted(p for p in base.glob("*") if p.is_dir())
        infos: list[ArtifactInfo] = []
        for stage_dir in stages:
            for path in sorted(stage_dir.glob("*")):
                if path.name.startswith(".") or not path.is_dir():
                    continue
                size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
                manifest = path / MANIFEST
                created = manifest.stat().st_mtime if manifest.exists() else path.stat().st_mtime
                infos.append(ArtifactInfo(stage_dir.name, path.name, path, size, created, manifest.exists()))
        return infos

    def remove(self, stage: str | None = None, fingerprint_prefix: str | None = None) -> int:
        removed = 0
        for info in self.list(stage):
            if fingerprint_prefix and not info.fingerprint.startswith(fingerprint_prefix):
                continue
            shutil.rmtree(info.path, ignore_errors=True)
            removed += 1
        return removed

    # -- blobs (e.g. per-block Hessians) ---------------------------------------------------------
    def _blob_paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.root / "blobs" / kind
        return base / f"{key}.safetensors", base / f"{key}.json"

    def put_blob(self, kind: str, key: str, tensors: dict, meta: dict | None = None) -> Path:
        """Store a dict of tensors atomically; ``meta`` (JSON-able) is kept beside it."""
        from safetensors.torch import save_file

        data_path, meta_path = self._blob_paths(kind, key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=data_path.parent, prefix=f".{key}.", suffix=".tmp")
        os.close(fd)
        try:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
            digest = file_sha256(Path(tmp))
            os.replace(tmp, data_path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        atomic_write_json(meta_path, {"sha256": digest, "meta": meta or {}})
        return data_path

    def get_blob(self, kind: str, key: str) -> tuple[dict, dict] | None:
        """(tensors, meta) on a verified hit; a corrupt blob is deleted and reported as a miss."""
        from safetensors.torch import load_file

        data_path, meta_path = self._blob_paths(kind, key)
        if not (data_path.is_file() and meta_path.is_file()):
            return None
        try:
            record = json.loads(meta_path.read_text())
            if file_sha256(data_path) != record["sha256"]:
                raise ValueError("checksum mismatch")
            return load_file(str(data_path)), record.get("meta", {})
        except Exception as exc:  # corrupt meta or data: recompute
            log.warning("blob %s/%s unusable (%s); recomputing", kind, key, exc)
            data_path.unlink(missing_ok=True)
            meta_path.unlink(missing_ok=True)
            return None

    def has_blob(self, kind: str, key: str) -> bool:
        data_path, meta_path = self._blob_paths(kind, key)
        return data_path.is_file() and meta_path.is_file()
