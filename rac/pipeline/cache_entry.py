"""One entry of the artifact cache as housekeeping lists it, and the manifest file that seals an artifact.

Below both ``rac.pipeline.cache`` (which writes entries) and ``rac.pipeline.housekeeping`` (which lists,
removes and evicts them), so neither imports the other's module to share these.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

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
