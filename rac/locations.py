"""Where rac keeps its files: the one place ``$RAC_CACHE`` is read (torch-free, no rac imports)."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_root() -> Path:
    """The cache root: ``$RAC_CACHE`` when set, else ``~/.cache/rac`` (artifacts, blobs, converted models)."""
    return Path(os.environ.get("RAC_CACHE") or Path.home() / ".cache" / "rac").expanduser()
