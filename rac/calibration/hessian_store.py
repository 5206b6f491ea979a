"""The Hessian store shared by the hessian and prune stages: keys, load/put, background writes, retention.

A Hessian of (block l, input group g) is keyed by

    sha256(HESSIAN_VERSION, code digest, calibration fingerprint, model identity, model dtype,
           replay batch size, storage format, l, g, upstream digest)

* code digest = hash of the source of every rac module the prune stage imports, transitively
  (``rac.pipeline.inputs.module_code_digest``): changing the Hessian, replay or pruning code invalidates
  the stored Hessians without anyone bumping ``HESSIAN_VERSION``;

* calibration fingerprint = sha256 of ``calibration.safetensors`` (token ids, offsets, per-token
  weights and kinds: the prompt/decode weights are part of it);
* upstream digest = a running hash over every module pruned upstream of that input (method, sparsity,
  pattern, the algorithm's settings and the within-block order); ``EMPTY_UPSTREAM`` when nothing
  upstream is pruned. Only such Hessians can serve another configuration (another sparsity, scope or
  method changes every digest downstream of its first pruned module), which is what the default
  retention policy ``reusable`` keeps; ``all`` keeps every Hessian (an interrupted prune resumes
  block by block), ``none`` keeps only what the prune stage needs from the hessian stage.

Storage formats: ``float32`` (as computed), ``float32-upper`` (upper triangle only: half the disk,
lossless for a symmetric H) and ``bfloat16-upper`` (a quarter). A non-default format is applied to
every Hessian before use, freshly computed or loaded, so a result never depends on the cache state.
Blobs are written on one background thread: the safetensors write overlaps the next block's compute.
Under torchrun, lookups are agreed by all ranks and only rank 0 writes (``rac.models.distributed``).
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from rac.hashing import json_digest

if TYPE_CHECKING:
    from rac.recipe.settings import PruneSection, RecipeSettings

HESSIAN_KIND = "hessian"
HESSIAN_VERSION = "1"
EMPTY_UPSTREAM = "dense"
RETENTION = ("reusable", "all", "none")
STORAGE = ("float32", "float32-upper", "bfloat16-upper")

log = logging.getLogger(__name__)


class BlobCache(Protocol):
    """The part of ``rac.pipeline.cache.Cache`` the store uses."""

    def put_blob(self, kind: str, key: str, tensors: dict, meta: dict | None = None) -> Path: ...
    def get_blob(self, kind: str, key: str) -> tuple[dict, dict] | None: ...
    def has_blob(self, kind: str, key: str) -> bool: ...


def _sha(*parts: Any) -> str:
    return json_digest(parts)


def calibration_fingerprint(folder: Path) -> str:
    """sha256 of the calibration tensors saved in a hessian artifact (or its temp dir)."""
    from rac.calibration.mix import CALIB_TENSORS
    from rac.pipeline.cache import file_sha256

    return file_sha256(Path(folder) / CALIB_TENSORS)


def base_key(calib_fp: str, identity: str, dtype: str | None, batch_size: int, storage: str = "float32",
             code: str = "") -> str:
    """What every Hessian of one calibration replay depends on besides its position and upstream
    (``code``: digest of the Hessian/replay/pruning source, so a code change invalidates stored Hessians)."""
    parts: tuple[Any, ...] = (HESSIAN_VERSION, code, calib_fp, identity, dtype or "float32", int(batch_size))
    return _sha(*parts) if storage == "float32" else _sha(*parts, storage)


@dataclass(frozen=True)
class StorePolicy:
    """Which Hessians are kept (``keep``), in which format (``storage``), up to ``max_bytes`` per run."""

    keep: str = "reusable"
    storage: str = "float32"
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.keep not in RETENTION:
            raise ValueError(f"prune.keep_hessians must be one of {', '.join(RETENTION)}, got {self.keep!r}")
        if self.storage not in STORAGE:
            raise ValueError(f"prune.hessian_storage must be one of {', '.join(STORAGE)}, got {self.storage!r}")


def store_policy(prune: PruneSection) -> StorePolicy:
    """The store policy of a recipe's prune settings."""
    cap = prune.hessian_cache_max_gb
    return StorePolicy(prune.keep_hessians, prune.hessian_storage, None if cap is None else int(float(cap) * 1e9))


def replay_base_key(settings: RecipeSettings, identity: str, calib_dir: Path) -> str:
    """The base key of every Hessian of one calibration replay of the recipe's model (``identity``:
    the engine's model identity; resolved from the recipe when empty)."""
    from rac.pipeline.inputs import module_code_digest

    if settings.prune is None:
        raise ValueError("Hessians are only computed for a recipe with a prune section")
    if not identity:
        from rac.models.load import resolve_model

        identity = resolve_model(settings.model.as_dict()).identity
    return base_key(calibration_fingerprint(calib_dir), identity, settings.model.dtype, settings.prune.batch_size,
                    settings.prune.hessian_storage, module_code_digest("rac.stages.prune"))


def hessian_key(base: str, block: int, input_key: str, upstream: str) -> str:
    """Cache key of the Hessian of ``input_key`` in ``block`` given the upstream digest."""
    return _sha(base, block, input_key, upstream)[:40]


class Upstream:
    """Running digest of the compression applied upstream of the current input (sequential mode)."""

    def __init__(self, digest: str = EMPTY_UPSTREAM) -> None:
        self.digest = digest

    def add(self, entry: dict) -> None:
        self.digest = _sha(self.digest, entry)


def pack(H: torch.Tensor, storage: str) -> torch.Tensor:
    """The stored form of H: as is, or its upper triangle (row-major) in float32 / bfloat16."""
    if storage == "float32":
        return H.detach().to(torch.float32).contiguous()
    rows, cols = torch.triu_indices(H.shape[0], H.shape[0])
    dtype = torch.bfloat16 if storage.startswith("bfloat16") else torch.float32
    return H.detach()[rows, cols].to(dtype).contiguous()


def unpack(stored: torch.Tensor, storage: str) -> torch.Tensor:
    """H in float32 from its stored form (the upper triangle mirrored)."""
    if storage == "float32":
        return stored.to(torch.float32)
    n = int((-1 + (1 + 8 * stored.numel()) ** 0.5) / 2)
    rows, cols = torch.triu_indices(n, n)
    H = torch.zeros(n, n, dtype=torch.float32, device=stored.device)
    H[rows, cols] = stored.to(torch.float32)
    H[cols, rows] = stored.to(torch.float32)
    return H


class HessianStore:
    """Load and keep Hessians under a policy; writes run on one background thread (``close()`` waits)."""

    def __init__(self, cache: BlobCache, policy: StorePolicy | None = None) -> None:
        self.cache = cache
        self.policy = policy or StorePolicy()
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hessian-store")
        self.pending: list[Future] = []
        self.stored = self.skipped = self.bytes = 0
        self._capped = False

    def has(self, key: str) -> bool:
        """Whether the Hessian is stored (under torchrun: on every rank's view of the cache)."""
        from rac.models.distributed import agree

        return agree(self.cache.has_blob(HESSIAN_KIND, key))

    def canonical(self, H: torch.Tensor) -> torch.Tensor:
        """H as it would come back from the store (identity for float32), so hits equal misses."""
        if self.policy.storage == "float32":
            return H
        return unpack(pack(H.cpu(), self.policy.storage), self.policy.storage).to(H.device)

    def load(self, key: str, input_key: str) -> tuple[torch.Tensor, float] | None:
        """(H summed over tokens, total token weight) on a verified hit (under torchrun: a hit on every rank)."""
        from rac.models.distributed import agree

        found = self.cache.get_blob(HESSIAN_KIND, key)
        if not agree(found is not None and input_key in found[0]) or found is None:
            return None
        tensors, meta = found
        storage = str(meta.get("storage", "float32"))
        return unpack(tensors[input_key], storage), float(meta.get("total_weight", 0.0))

    def put(self, key: str, input_key: str, H: torch.Tensor, total_weight: float, block: int,
            upstream: str, required: bool = False) -> bool:
        """Store H unless the policy drops it (``required``: another stage reads it); True when queued.
        Under torchrun only rank 0 writes (every rank holds the same all-reduced H)."""
        from rac.models.distributed import is_owner

        if not is_owner():
            return False
        keep = required or self.policy.keep == "all" or (self.policy.keep == "reusable" and upstream == EMPTY_UPSTREAM)
        stored = pack(H.detach().cpu(), self.policy.storage)  # device copies here, not on the worker
        size = stored.numel() * stored.element_size()
        if keep and not required and self.policy.max_bytes is not None and self.bytes + size > self.policy.max_bytes:
            if not self._capped:
                log.warning("Hessian store: cap of %.2f GB reached; later Hessians are not kept",
                            self.policy.max_bytes / 1e9)
                self._capped = True
            keep = False
        if not keep:
            self.skipped += 1
            return False
        self.stored += 1
        self.bytes += size
        meta = {"block": block, "input_key": input_key, "total_weight": total_weight,
                "storage": self.policy.storage, "upstream": upstream}
        self.pending.append(self.pool.submit(self.cache.put_blob, HESSIAN_KIND, key, {input_key: stored}, meta))
        return True

    def close(self) -> None:
        """Wait for every write; re-raise the first failure."""
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)

    def stats(self) -> dict:
        return {"hessians_stored": self.stored, "hessians_not_kept": self.skipped,
                "hessian_bytes_stored": self.bytes, "keep_hessians": self.policy.keep,
                "hessian_storage": self.policy.storage}
