"""Content-addressed artifact cache with atomic writes, checksums and a file lock per entry.

Layout under the cache root (``$RAC_CACHE``, default ``~/.cache/rac``)::

    artifacts/<stage>/<fingerprint>/...files...  + _manifest.json (sha256 of every file)
    blobs/<kind>/<key>.safetensors                + <key>.json (meta + sha256)
    locks/<artifact|blob>.<stage|kind>.<key>.lock  (one file lock per entry)

An artifact is written into a temporary sibling directory while its lock is held and renamed into
place, so a reader never sees a partial artifact and two runs never compute one fingerprint twice
(the second waits and reuses the first's result). A manifest mismatch (corruption, truncation, no
files) counts as a miss. A replaced entry is first renamed aside, never deleted in place. Temporary
entries left by a killed writer (``.<key>.*.tmp``) are removed once no lock holds them. The
modification time of a manifest (or blob meta file) records when the entry was last used.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from rac.errors import RacError
from rac.locations import default_cache_root
from rac.pipeline.cache_entry import MANIFEST, ArtifactInfo
from rac.pipeline.housekeeping import artifact_entries, partial_entries, remove_entries
from rac.pipeline.paths import UnsafePathError, is_within, safe_rmtree

log = logging.getLogger(__name__)
__all__ = ["BLOB_KINDS", "MANIFEST", "ArtifactInfo", "Cache", "CacheWriteError", "atomic_write_json",
           "atomic_write_text", "file_sha256"]
# blob kinds written by stages: rac.stages.hessian.HESSIAN_KIND and the dense probe reference
BLOB_KINDS: tuple[str, ...] = ("hessian", "probe_dense")


class CacheWriteError(RacError, OSError):
    """Writing a cache entry failed (e.g. the disk is full); nothing partial was left behind."""


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


def _touch(path: Path) -> None:
    """Record a use (mtime); a read-only cache simply keeps the old time."""
    try:
        os.utime(path)
    except OSError:
        pass


@contextmanager
def _clear_errors(what: str, root: Path) -> Iterator[None]:
    """A full disk becomes a CacheWriteError that says what to do."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or isinstance(exc, CacheWriteError):
            raise
        raise CacheWriteError(exc.errno, f"no space left on device while writing {what} under {root}; nothing "
                                         "partial was kept. Free space, e.g. `rac cache gc --max-size 20G`") from exc


class Cache:
    """Artifacts of stages (directories) and blobs (single safetensors files) by content key."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root else default_cache_root()
        self._locks: dict[str, FileLock] = {}
        self._locks_guard = threading.Lock()

    # -- locks ----------------------------------------------------------------------------------
    def _lock_path(self, kind: str, name: str, key: str) -> Path:
        return self.root / "locks" / f"{kind}.{name}.{key}.lock"

    def lock(self, kind: str, name: str, key: str) -> FileLock:
        """This process's (re-entrant) lock of one entry; ``kind`` is ``artifact`` or ``blob``."""
        path = self._lock_path(kind, name, key)
        with self._locks_guard:
            if str(path) not in self._locks:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._locks[str(path)] = FileLock(str(path))
            return self._locks[str(path)]

    @contextmanager
    def locked(self, stage: str, fingerprint: str) -> Iterator[None]:
        """Hold the lock of one artifact (waits for a concurrent writer of the same fingerprint)."""
        lock = self.lock("artifact", stage, fingerprint)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            log.info("another run is computing %s/%s; waiting for it (lock %s)", stage, fingerprint, lock.lock_file)
            lock.acquire()
        try:
            yield
        finally:
            lock.release()

    def is_held(self, kind: str, name: str, key: str) -> bool:
        """Whether any lock (another process, or this one) holds the entry right now."""
        path = self._lock_path(kind, name, key)
        if not path.exists():
            return False
        probe = FileLock(str(path), timeout=0)
        try:
            probe.acquire()
        except Timeout:
            return True
        probe.release()
        return False

    # -- stage artifacts -------------------------------------------------------------------------
    def artifact_path(self, stage: str, fingerprint: str) -> Path:
        return self.root / "artifacts" / stage / fingerprint

    @staticmethod
    def manifest_files(path: Path) -> dict[str, str] | None:
        """The manifest's file table; None when it is missing, unreadable or lists no files."""
        try:
            files = json.loads((path / MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return files if isinstance(files, dict) and files else None

    def verify(self, path: Path) -> bool:
        """True when the manifest lists files and every one has its recorded hash."""
        files = self.manifest_files(path)
        if files is None:
            return False
        for rel, expected in files.items():
            target = path / rel
            try:
                if not target.is_file() or file_sha256(target) != expected:
                    return False
            except OSError:
                return False
        return True

    def lookup(self, stage: str, fingerprint: str) -> Path | None:
        """The artifact dir on a valid hit (its use is recorded); a corrupt or partial entry is
        removed (unless a writer holds it) and reported as a miss."""
        path = self.artifact_path(stage, fingerprint)
        if not path.exists():
            return None
        if self.verify(path):
            _touch(path / MANIFEST)
            return path
        lock = self.lock("artifact", stage, fingerprint)
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return None  # a writer is replacing it right now
        try:
            if self.verify(path):
                return path
            log.warning("cache entry %s/%s is corrupt or partial; recomputing", stage, fingerprint)
            self._discard(path)
            return None
        finally:
            lock.release()

    def exists(self, stage: str, fingerprint: str) -> bool:
        return self.manifest_files(self.artifact_path(stage, fingerprint)) is not None

    def _discard(self, path: Path) -> None:
        """Rename an entry aside (readers then see it absent, never half-deleted) and delete it."""
        if not path.exists():
            return
        if not is_within(path, self.root):
            raise UnsafePathError(f"refusing to delete {path}: it is not inside {self.root}")
        aside = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}.old.tmp"
        os.rename(path, aside)
        safe_rmtree(aside, self.root)

    def clean_stale(self, folder: Path, key: str | None = None, holding: bool = False) -> int:
        """Delete temp entries (``.<key>.*.tmp``) in ``folder`` whose entry no lock holds
        (``holding``: the caller holds the lock of ``key``, so all of its temp entries are stale)."""
        removed = 0
        for item in self.partial_entries(folder, key):
            if holding or not item.held:
                safe_rmtree(item.path, self.root)
                removed += 1
        return removed

    def partial_entries(self, folder: Path, key: str | None = None) -> list[ArtifactInfo]:
        """Temp entries of writers in ``folder`` (an artifacts/<stage> or blobs/<kind> folder)."""
        return partial_entries(self, folder, key)

    @contextmanager
    def writing(self, stage: str, fingerprint: str, meta: dict | None = None) -> Iterator[Path]:
        """Yield an empty temp dir while holding the entry's lock; on clean exit seal it with a
        manifest and rename it into place (a valid entry stored meanwhile is kept instead)."""
        final = self.artifact_path(stage, fingerprint)
        final.parent.mkdir(parents=True, exist_ok=True)
        with self.lock("artifact", stage, fingerprint):
            self.clean_stale(final.parent, fingerprint, holding=True)
            with _clear_errors(f"cache entry {stage}/{fingerprint}", self.root):
                tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{fingerprint}.", suffix=".tmp"))
            try:
                with _clear_errors(f"cache entry {stage}/{fingerprint}", self.root):
                    yield tmp
                    self.seal(tmp, stage, fingerprint, meta or {})
                if self.verify(final):
                    log.info("cache entry %s/%s was stored by another run; keeping it", stage, fingerprint)
                else:
                    self._swap_in(tmp, final)
            finally:
                if tmp.exists():
                    safe_rmtree(tmp, self.root)

    def _swap_in(self, tmp: Path, final: Path) -> None:
        """Rename ``tmp`` to ``final``; an old entry is renamed aside first and deleted after."""
        if not final.exists():
            os.rename(tmp, final)
            return
        aside = final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.old.tmp"
        os.rename(final, aside)
        try:
            os.rename(tmp, final)
        except BaseException:
            os.rename(aside, final)
            raise
        safe_rmtree(aside, self.root)

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
        """Stage artifacts (of ``stage``, or all); see ``entries`` for blobs and temp entries too."""
        return artifact_entries(self, stage)

    def remove(self, stage: str | None = None, fingerprint_prefix: str | None = None) -> int:
        """Remove artifacts, blobs and stale temp entries of ``stage`` (stage or blob kind) whose key
        starts with ``fingerprint_prefix``; entries a writer holds are skipped. Returns the count."""
        return remove_entries(self, stage, fingerprint_prefix)

    # -- blobs (e.g. per-block Hessians) ---------------------------------------------------------
    def _blob_paths(self, kind: str, key: str) -> tuple[Path, Path]:
        base = self.root / "blobs" / kind
        return base / f"{key}.safetensors", base / f"{key}.json"

    def put_blob(self, kind: str, key: str, tensors: dict, meta: dict | None = None) -> Path:
        """Store a dict of tensors atomically; ``meta`` (JSON-able) is kept beside it. Both files are
        written completely before either replaces an old version."""
        from safetensors.torch import save_file

        data_path, meta_path = self._blob_paths(kind, key)
        data_path.parent.mkdir(parents=True, exist_ok=True)
        with self.lock("blob", kind, key), _clear_errors(f"blob {kind}/{key}", self.root):
            self.clean_stale(data_path.parent, key, holding=True)
            tmp_data = data_path.parent / f".{key}.{uuid.uuid4().hex[:8]}.data.tmp"
            tmp_meta = data_path.parent / f".{key}.{uuid.uuid4().hex[:8]}.meta.tmp"
            try:
                save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp_data))
                digest = file_sha256(tmp_data)
                with open(tmp_meta, "w") as handle:
                    json.dump({"sha256": digest, "meta": meta or {}}, handle, indent=2, sort_keys=True, default=str)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(tmp_data, data_path)
                os.replace(tmp_meta, meta_path)
            finally:
                tmp_data.unlink(missing_ok=True)
                tmp_meta.unlink(missing_ok=True)
        return data_path

    def get_blob(self, kind: str, key: str) -> tuple[dict, dict] | None:
        """(tensors, meta) on a verified hit; a corrupt blob is deleted and reported as a miss. The
        data is read once, so a concurrent replace cannot mix two versions."""
        from safetensors.torch import load as load_bytes

        data_path, meta_path = self._blob_paths(kind, key)
        if not (data_path.is_file() and meta_path.is_file()):
            return None
        try:
            record = json.loads(meta_path.read_text())
            data = data_path.read_bytes()
            if hashlib.sha256(data).hexdigest() != record["sha256"]:
                raise ValueError("checksum mismatch")
            tensors = load_bytes(data)
        except Exception as exc:  # corrupt meta or data: recompute
            with self.lock("blob", kind, key):  # a writer may be between its two renames
                if self._blob_valid(data_path, meta_path):
                    return self.get_blob(kind, key)
                log.warning("blob %s/%s unusable (%s); recomputing", kind, key, exc)
                data_path.unlink(missing_ok=True)
                meta_path.unlink(missing_ok=True)
            return None
        _touch(meta_path)
        return tensors, record.get("meta", {})

    @staticmethod
    def _blob_valid(data_path: Path, meta_path: Path) -> bool:
        try:
            return file_sha256(data_path) == json.loads(meta_path.read_text())["sha256"]
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def has_blob(self, kind: str, key: str) -> bool:
        data_path, meta_path = self._blob_paths(kind, key)
        if data_path.is_file() and meta_path.is_file():
            _touch(meta_path)
            return True
        return False
