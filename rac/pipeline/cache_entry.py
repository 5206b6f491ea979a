"""One entry of the artifact cache as housekeeping lists it, the manifest file that seals an artifact,
and :class:`CacheStore`, what housekeeping needs of a cache.

Below both ``rac.pipeline.cache`` (which writes entries and offers ``list``/``remove`` through
housekeeping) and ``rac.pipeline.housekeeping`` (which lists, removes and evicts entries of any
:class:`CacheStore`), so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from filelock import FileLock

MANIFEST = "_manifest.json"  # sha256 of every file of an artifact; its mtime records the last use


@dataclass(frozen=True)
class ArtifactInfo:
    stage: str  # stage name (artifacts) or blob kind (blobs)
    fingerprint: str  # fingerprint (artifacts) or key (blobs)
    path: Path
    size_bytes: int
    created: float
    valid: bool
    kind: str = "artifact"  # artifact | blob | partial (a writer's temp entry)
    last_used: float = 0.0
    held: bool = False  # a lock holds the entry (a writer is at work)


class CacheStore(Protocol):
    """The cache as housekeeping sees it (``rac.pipeline.cache.Cache`` is one)."""

    root: Path

    def lock(self, kind: str, name: str, key: str) -> FileLock: ...
    def is_held(self, kind: str, name: str, key: str) -> bool: ...
    def manifest_files(self, path: Path) -> dict[str, str] | None: ...
    def _discard(self, path: Path) -> None: ...
