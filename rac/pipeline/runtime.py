"""What an application hands the generic engine for a run: device, process group, environment facts.

The engine (plan, cache, run) knows no stage, model or backend. ``rac.app`` builds the
:class:`Runtime` for rac (torch device resolution, torchrun ranks, torch/transformers/vllm versions
in ``env.json``); engine tests and other applications get the default: one process on the CPU, and
only the facts the standard library knows.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import rac


class Ranks(Protocol):
    """The process group a run may be part of (``rac.models.distributed`` is one, for torchrun)."""

    def active(self) -> bool: ...
    def is_owner(self) -> bool: ...
    def rank(self) -> int: ...
    def agree(self, flag: bool) -> bool: ...


class OneProcess:
    """No process group: this process runs every stage and writes the run directory."""

    def active(self) -> bool:
        return False

    def is_owner(self) -> bool:
        return True

    def rank(self) -> int:
        return 0

    def agree(self, flag: bool) -> bool:
        return flag


def git_commit() -> str | None:
    """The commit of the checkout rac runs from (None outside a git checkout)."""
    try:
        root = Path(rac.__file__).resolve().parents[1]
        out = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def base_environment(device: str) -> dict[str, Any]:
    """The facts every run records in env.json, known without importing any framework."""
    return {
        "rac": rac.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "git_commit": git_commit(),
        "device": device,
        "cpu_count": os.cpu_count(),
    }


def _cpu(run_device: str | None) -> str:
    return "cpu"


@dataclass(frozen=True)
class Runtime:
    """How a run resolves its device, which process group it is in, and what env.json records.

    ``device`` gets the recipe's ``run.device`` (None when unset) and returns the device the stages
    use; it may join a process group (torchrun), and raises for a device this machine lacks, before
    any work. ``environment`` gets that device and returns env.json's facts.
    """

    device: Callable[[str | None], str] = _cpu
    ranks: Ranks = field(default_factory=OneProcess)
    environment: Callable[[str], dict[str, Any]] = base_environment
