"""Typed, frozen settings per recipe section, built once from the schema-filled recipe.

Defaults live only in ``schemas/recipe.schema.json``: no field here has a default. ``recipe_settings``
fills the schema defaults first and then requires every field, so a key the schema leaves unset is
an error naming it, never a silent fallback. Stages read these objects (``ctx.settings``) instead of
the plain recipe dict; helpers that take a section as a dict get ``section.as_dict()``.
Torch-free: the plan and the validator may import it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rac.errors import RacError
from rac.recipe.schema import fill_defaults


class SettingsError(RacError, ValueError):
    """The recipe lacks a key the settings need (the message names the dotted key)."""


class Section:
    """Base of every settings section: conversion back to the plain dict helpers take."""

    def as_dict(self) -> dict:
        """The section as a plain (mutable) dict, lists for tuples."""
        return {f.name: thaw(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True)
class ModelSettings(Section):
    id: str
    gguf_file: str | None
    revision: str | None
    dtype: str
    trust_remote_code: bool


@dataclass(frozen=True)
class SourceSettings(Section):
    dataset: str | None
    path: str | None
    revision: str | None
    split: str
    field: str | None
    answer_field: str | None
    template: str | None
    weight: float


@dataclass(frozen=True)
class BudgetSettings(Section):
    tokens: int | None
    prompts: int | None


@dataclass(frozen=True)
class RenderSettings(Section):
    chat_template: bool
    system_prompt: str | None
    prefix: str


@dataclass(frozen=True)
class PositionWeightSettings(Section):
    kind: str
    factor: float
    tail_tokens: int
    marker: str | None


@dataclass(frozen=True)
class WeightSettings(Section):
    prompt: float
    decode: float
    position: PositionWeightSettings


@dataclass(frozen=True)
class VllmSettings(Section):
    tensor_parallel_size: int
    data_parallel_size: int
    gpu_memory_utilization: float
    max_model_len: int | None
    enforce_eager: bool


@dataclass(frozen=True)
class RolloutSettings(Section):
    engine: str
    model: ModelSettings | None
    t_max: int
    samples_per_prompt: int
    temperature: float
    top_p: float
    top_k: int
    seed: int
    batch_size: int
    on_truncated: str
    filter_correct: bool
    vllm: VllmSettings


@dataclass(frozen=True)
class CalibrationSettings(Section):
    kind: str
    sources: tuple[SourceSettings, ...]
    budget: BudgetSettings
    text_seq_len: int
    max_prompt_tokens: int
    render: RenderSettings
    weights: WeightSettings
    rollout: RolloutSettings
    seed: int


@dataclass(frozen=True)
class ClosedLoopSettings(Section):
    rounds: int


@dataclass(frozen=True)
class PruneSection(Section):
    method: str
    sparsity: float
    pattern: str | None
    block_size: int
    dampening: float
    mask_selection: str
    sequential: bool
    true_sequential: bool
    batch_size: int
    keep_hessians: str
    hessian_storage: str
    hessian_cache_max_gb: float | None
    closed_loop: ClosedLoopSettings
    scopes: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True)
class RecoverSettings(Section):
    enabled: bool
    tokens: int
    lr: float
    batch_size: int
    optimizer: str
    weight_decay: float
    temperature: float
    top_k: int | None
    loss_on_prompt: bool
    train: str
    heldout: int
    max_seq_len: int
    seed: int


@dataclass(frozen=True)
class QuantizeSettings(Section):
    scheme: str
    ignore: tuple[str, ...]
    targets: tuple[str, ...]


@dataclass(frozen=True)
class EvaluateSettings(Section):
    engine: str
    max_new_tokens: int
    temperature: float
    top_p: float
    samples: int
    limit: int | None
    batch_size: int
    sandbox: str
    vllm: VllmSettings
    tasks: tuple[Mapping[str, Any], ...]  # per-type keys differ; each is schema-filled and read-only


@dataclass(frozen=True)
class ExportSettings(Section):
    format: str
    path: str | None
    max_shard_size: str
    model_card: bool
    overwrite: bool


@dataclass(frozen=True)
class RunSettings(Section):
    output_dir: str
    name: str | None
    seed: int
    device: str
    allow_env: bool


@dataclass(frozen=True)
class RecipeSettings(Section):
    """The whole recipe; optional sections are None when absent."""

    model: ModelSettings
    calibration: CalibrationSettings
    prune: PruneSection | None
    recover: RecoverSettings | None
    quantize: QuantizeSettings | None
    evaluate: EvaluateSettings | None
    export: ExportSettings | None
    run: RunSettings


def freeze(value: Any) -> Any:
    """Read-only copy of plain data: dicts become mapping proxies, lists tuples."""
    if isinstance(value, Mapping):
        return types.MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Plain data from settings values (the inverse of :func:`freeze`, sections included)."""
    if isinstance(value, Section):
        return value.as_dict()
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


def _section_type(hint: Any) -> type[Section] | None:
    """The Section class in ``X`` or ``X | None``, else None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    found = [o for o in options if isinstance(o, type) and issubclass(o, Section)]
    return found[0] if found else None


def build(cls: type[Any], data: Any, path: str) -> Any:
    """An instance of ``cls`` from a filled mapping; every field must be present."""
    if not isinstance(data, Mapping):
        raise SettingsError(f"{path}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        key = f"{path}.{f.name}" if path else f.name
        if f.name not in data:
            raise SettingsError(f"{key}: missing from the recipe (the schema gives it no default)")
        values[f.name] = _convert(hints[f.name], data[f.name], key)
    return cls(**values)


def _convert(hint: Any, value: Any, path: str) -> Any:
    section = _section_type(hint)
    if section is not None and value is not None:
        return build(section, value, path)
    if typing.get_origin(hint) is tuple:
        item = _section_type(typing.get_args(hint)[0])
        if not isinstance(value, (list, tuple)):
            raise SettingsError(f"{path}: expected a list, got {type(value).__name__}")
        if item is not None:
            return tuple(build(item, v, f"{path}[{i}]") for i, v in enumerate(value))
    return freeze(value)


def recipe_settings(recipe: Mapping[str, Any]) -> RecipeSettings:
    """Settings of a recipe (schema defaults are filled first; filling a filled recipe is a no-op)."""
    return build(RecipeSettings, {**dict.fromkeys(("prune", "recover", "quantize", "evaluate", "export")),
                                  **fill_defaults(dict(recipe))}, "")
