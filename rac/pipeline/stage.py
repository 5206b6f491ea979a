"""The stage contract: what a stage reads, needs and produces."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from rac.pipeline.cache import Cache
    from rac.recipe.settings import RecipeSettings


class ProgressHandle(Protocol):
    def advance(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class ProgressReporter(Protocol):
    def task(self, description: str, total: int | None) -> ProgressHandle: ...


class _NullHandle:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class NullProgress:
    """Progress reporter that shows nothing (tests, library use)."""

    def task(self, description: str, total: int | None) -> ProgressHandle:
        return _NullHandle()


def _always(recipe: dict) -> bool:
    return True


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline; its artifact is keyed by the fingerprint of what it reads."""

    name: str
    needs: tuple[str, ...]
    reads: tuple[str, ...]
    version: str  # manual salt; the stage's own code is hashed into its fingerprint automatically
    run: Callable[[StageContext], dict]
    enabled: Callable[[dict], bool] = _always
    cached: bool = True
    description: str = ""
    distributed: bool = False  # under torchrun every rank runs it (data-parallel); else rank 0 alone
    device_dependent: bool = False  # results depend on the machine (timing): its device kind is hashed in


@dataclass
class StageContext:
    """Everything a stage may use; stages never guess paths."""

    recipe: dict
    out_dir: Path
    inputs: dict[str, Path]
    cache: Cache
    device: str
    model_identity: str  # the target model's identity (the application resolves it; rac: rac.app)
    run_dir: Path
    progress: ProgressReporter = field(default_factory=NullProgress)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("rac.stage"))
    _settings: Any = field(default=None, init=False, repr=False, compare=False)

    @property
    def settings(self) -> RecipeSettings:
        """Typed, frozen settings of ``recipe`` (built once); stages read the recipe only through these."""
        if self._settings is None:
            from rac.recipe.settings import recipe_settings

            self._settings = recipe_settings(self.recipe)
        return self._settings
