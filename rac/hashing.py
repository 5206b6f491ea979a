"""The one way rac turns JSON-able data into a digest (cache keys, run names, model identities).

Every digest is sha256 of ``json.dumps(value, sort_keys=True, default=str)``; ``compact`` drops the
spaces after separators. Changing this changes every cache key, so each caller keeps its exact
format (compact or not, prefix length). Torch-free.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any, compact: bool = True) -> str:
    """``value`` as JSON with sorted keys (non-JSON values as ``str``); compact separators by default."""
    return json.dumps(value, sort_keys=True, separators=(",", ":") if compact else None, default=str)


def json_digest(value: Any, length: int | None = None, compact: bool = False) -> str:
    """sha256 hex of ``canonical_json(value, compact)``, cut to ``length`` characters when given."""
    digest = hashlib.sha256(canonical_json(value, compact).encode()).hexdigest()
    return digest[:length] if length else digest


def recipe_hash(data: dict) -> str:
    """8 hex chars identifying a resolved recipe (run directory and grid cell names)."""
    return json_digest(data, 8)
