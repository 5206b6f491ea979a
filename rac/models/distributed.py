"""Data-parallel calibration replay over torch.distributed ranks (``torchrun``), on CPU (gloo) or GPU (nccl).

Each rank replays its share of the calibration batches through the current block; the weighted
Hessian sums and their token weights are all-reduced, so every rank holds the Hessian of the whole
calibration set (equal to one process up to float summation order). Rank 0 then owns the result:
pruned weights are broadcast from it, only it writes to the cache, and cache hits are agreed on by
all ranks so their control flow (and hence their collectives) never diverges.

Outside ``torchrun`` (no initialised process group) every function is a no-op for one rank.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import torch

T = TypeVar("T")


def active() -> bool:
    """True inside an initialised process group with more than one rank (never imports torch itself)."""
    dist = sys.modules.get("torch.distributed")
    return dist is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return sys.modules["torch.distributed"].get_rank() if active() else 0


def world_size() -> int:
    return sys.modules["torch.distributed"].get_world_size() if active() else 1


def is_owner() -> bool:
    """Whether this rank writes results (rank 0, or the only process)."""
    return rank() == 0


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(device: str) -> str:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA); returns this rank's device."""
    if not launched_by_torchrun():
        return device
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return device
    use_cuda = device.startswith("cuda")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        return f"cuda:{local}"
    return device


def shard(items: Iterable[T]) -> Iterator[T]:
    """This rank's share: every world_size-th item, starting at its rank (all items for one rank)."""
    r, n = rank(), world_size()
    for i, item in enumerate(items):
        if i % n == r:
            yield item


def reduce_sums(sums: Any) -> Any:
    """All-reduce a ``HessianSums`` in place (H per key and the total token weight); returns it."""
    if not active():
        return sums
    import torch
    import torch.distributed as dist

    for key in sorted(sums.H):
        dist.all_reduce(sums.H[key], op=dist.ReduceOp.SUM)
    total = torch.tensor([sums.total_weight], dtype=torch.float64, device=_device_of(sums))
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    sums.total_weight = float(total.item())
    return sums


def agree(flag: bool) -> bool:
    """True only when ``flag`` is true on every rank (a collective: every rank must call it)."""
    if not active():
        return flag
    import torch
    import torch.distributed as dist

    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_collective_device())
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item())


def broadcast_(tensor: torch.Tensor) -> torch.Tensor:
    """Overwrite ``tensor`` with rank 0's copy (in place)."""
    if active():
        import torch.distributed as dist

        dist.broadcast(tensor, src=0)
    return tensor


def _collective_device() -> str:
    import torch
    import torch.distributed as dist

    return f"cuda:{torch.cuda.current_device()}" if dist.get_backend() == "nccl" else "cpu"


def _device_of(sums: Any) -> torch.device | str:
    for H in sums.H.values():
        return H.device
    return _collective_device()
