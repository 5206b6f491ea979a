"""Model facts without loading a model: depth, linear shapes and parameter count from the config alone.

``rac plan`` and recipe validation need the model's shape, never its weights. The config comes from
(first that works): a local folder's ``config.json``; the Hugging Face hub (or its local cache) for a
hub id; rac's table of known configs (``known_configs.json``: the builtin alias and the paper's
models), used for the builtin alias always (its GGUF metadata is slow to parse) and for hub ids only
when the hub is unreachable -- and then said so. Shapes come from instantiating the architecture on
PyTorch's ``meta`` device (no memory, no weights read). Nothing is written to rac's cache: the
builtin GGUF is not converted here (that happens when a stage loads the model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from rac.errors import RacError

KNOWN_CONFIGS_PATH = Path(__file__).with_name("known_configs.json")
DEPTH_KEYS = ("num_hidden_layers", "n_layer", "num_layers")


@dataclass(frozen=True)
class LinearShape:
    """One prunable linear layer of a decoder block (or lm_head/embed_tokens outside the blocks)."""

    name: str  # short name, e.g. "down_proj"
    input_key: str  # input group sharing one Hessian: attn_in | attn_out | mlp_in | mlp_out ("" outside)
    in_features: int
    out_features: int


@dataclass(frozen=True)
class ModelFacts:
    """What a plan needs to know about a model: depth, shapes, parameter count, KV-cache size."""

    model_id: str
    source: str  # where the config came from, in words
    architecture: str
    n_blocks: int
    hidden_size: int
    vocab_size: int
    n_kv_heads: int
    head_dim: int
    params: int  # parameters (tied embeddings counted once)
    block_linears: tuple[LinearShape, ...]  # of one decoder block (all blocks alike)
    outside: tuple[LinearShape, ...]  # lm_head / embed_tokens
    config_dtype: str | None = None
    from_table: bool = False  # True when the shapes come from rac's table, not the model's own config

    def kv_bytes_per_token(self, dtype_bytes: int) -> int:
        """KV-cache bytes one token occupies across all blocks."""
        return 2 * self.n_blocks * self.n_kv_heads * self.head_dim * dtype_bytes


class FactsUnavailable(RacError, ValueError):
    """The model's config could not be read here; the message is one line saying why."""


@lru_cache(maxsize=1)
def known_configs() -> dict[str, dict]:
    """rac's table of known model configs (model id -> {source, config})."""
    data = json.loads(KNOWN_CONFIGS_PATH.read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def _depth_of(config: dict) -> int | None:
    config = config.get("text_config") or config
    for key in DEPTH_KEYS:
        if isinstance(config.get(key), int):
            return int(config[key])
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _hub_config(repo_id: str, revision: str | None, offline: bool) -> dict:
    """config.json of a hub repo from the local hub cache, else (unless ``offline``) the hub."""
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    cached = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text(encoding="utf-8"))
    if offline:
        raise FactsUnavailable(f"{repo_id}: config.json not in the local hub cache")
    try:  # like resolve_model: one quick attempt, no retry loop
        folder = snapshot_download(repo_id, revision=revision, allow_patterns=["config.json"])
    except Exception as exc:  # noqa: BLE001 - offline, gated, missing repo: all mean "not here"
        raise FactsUnavailable(f"{repo_id}: hub unreachable ({type(exc).__name__})") from None
    return json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))


def _gguf_config(folder: str, gguf_file: str) -> dict:
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(folder, gguf_file=gguf_file).to_dict()


def model_config(spec: dict, offline: bool = False) -> tuple[dict, str, bool]:
    """(config dict, where it came from, from rac's table?) for a recipe ``model`` section.

    ``offline`` reads only local files (the hub's local cache included). Raises FactsUnavailable
    with a one-line reason.
    """
    from rac.models.load import BUILTIN_ALIASES

    model_id = str(spec.get("id") or "")
    table = known_configs()
    if model_id in BUILTIN_ALIASES and model_id in table:
        return dict(table[model_id]["config"]), f"bundled config of the builtin {model_id!r}", False
    path = Path(model_id).expanduser()
    gguf_file = spec.get("gguf_file")
    if path.is_file() and path.suffix == ".gguf":
        if offline:
            raise FactsUnavailable(f"{model_id}: GGUF metadata is read only by `rac plan`")
        return _gguf_config(str(path.parent), path.name), f"GGUF metadata of {path.name}", False
    if path.is_dir():
        if gguf_file:
            if offline:
                raise FactsUnavailable(f"{model_id}: GGUF metadata is read only by `rac plan`")
            return _gguf_config(str(path), gguf_file), f"GGUF metadata of {gguf_file}", False
        config = path / "config.json"
        if not config.is_file():
            raise FactsUnavailable(f"{model_id}: no config.json in the folder")
        return json.loads(config.read_text(encoding="utf-8")), f"{config}", False
    if model_id.count("/") != 1 or model_id.startswith((".", "/", "~")):
        raise FactsUnavailable(f"model.id={model_id!r}: no such local path and not a hub id")
    try:
        return _hub_config(model_id, spec.get("revision"), offline), f"config.json of {model_id}", False
    except FactsUnavailable:
        if model_id in table:
            return (dict(table[model_id]["config"]),
                    f"rac's table of known configs ({table[model_id]['source']})", True)
        raise


def model_depth(spec: Any) -> int | None:
    """Number of decoder blocks from local information only (no network, no torch); None if unknown."""
    if not isinstance(spec, dict) or not isinstance(spec.get("id"), str):
        return None
    try:
        config, _, _ = model_config(spec, offline=True)
    except (FactsUnavailable, OSError, ValueError):
        return None
    return _depth_of(config)


def _count(module: Any) -> int:
    seen: set[int] = set()
    total = 0
    for param in module.parameters():
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
    return total


def facts_from_config(config_dict: dict, model_id: str, source: str, from_table: bool = False) -> ModelFacts:
    """Instantiate the architecture on the meta device and read its shapes (no memory, no weights)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from rac.models.blocks import find_blocks, linear_modules

    values = {k: v for k, v in config_dict.items() if k not in ("model_type", "transformers_version")}
    model_type = config_dict.get("model_type")
    if not model_type:
        raise FactsUnavailable(f"{model_id}: config has no model_type")
    try:
        config = AutoConfig.for_model(model_type, **values)
    except (KeyError, ValueError) as exc:
        raise FactsUnavailable(f"{model_id}: architecture {model_type!r} unknown to transformers "
                               f"({_first_line(exc)})") from None
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    _, blocks = find_blocks(model)
    linears = tuple(LinearShape(info.name, info.input_key, info.module.in_features, info.module.out_features)
                    for info in linear_modules(blocks[0]).values())
    outside = []
    head = model.get_output_embeddings()
    if head is not None and hasattr(head, "in_features"):
        outside.append(LinearShape("lm_head", "", head.in_features, head.out_features))
    embed = model.get_input_embeddings()
    if embed is not None:
        outside.append(LinearShape("embed_tokens", "", embed.embedding_dim, embed.num_embeddings))
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = int(getattr(text, "num_attention_heads", 1))
    hidden = int(getattr(text, "hidden_size", 0))
    head_dim = int(getattr(text, "head_dim", None) or hidden // max(heads, 1))
    kv_heads = int(getattr(text, "num_key_value_heads", None) or heads)
    dtype = config_dict.get("torch_dtype") or config_dict.get("dtype")
    return ModelFacts(model_id=model_id, source=source, architecture=type(model).__name__, n_blocks=len(blocks),
                      hidden_size=hidden, vocab_size=int(getattr(text, "vocab_size", 0)), n_kv_heads=kv_heads,
                      head_dim=head_dim, params=_count(model), block_linears=linears, outside=tuple(outside),
                      config_dtype=str(dtype) if dtype else None, from_table=from_table)


def model_facts(spec: dict) -> ModelFacts:
    """ModelFacts of a recipe ``model`` section (hub config fetched when reachable, else rac's table).

    Raises FactsUnavailable (one line) when neither the config nor a table entry is available.
    """
    config, source, from_table = model_config(spec)
    return facts_from_config(config, str(spec.get("id")), source, from_table)


def plan_identity(spec: dict) -> str:
    """The model identity the stages will use, without converting or downloading weights.

    Builtin alias: the same digest ``resolve_model`` computes, from the package's GGUF file facts
    (no conversion). Local paths: ``resolve_model`` (hashes small files only). Hub ids:
    ``resolve_model`` (fetches config.json to pin the commit). Raises FactsUnavailable (one line).
    """
    from rac.models import load

    model_id = spec.get("id")
    try:
        if model_id in load.BUILTIN_ALIASES:
            gguf, version = load._builtin_gguf(model_id)
            dist = load.BUILTIN_ALIASES[model_id][0]
            return load._digest("builtin", model_id, dist, version, gguf.name, gguf.stat().st_size)
        return load.resolve_model(spec).identity
    except load.ModelLoadError as exc:
        cause = exc.__cause__
        if cause is not None:  # the hub: say which repo and the first line of why
            raise FactsUnavailable(f"{model_id}: hub unreachable ({type(cause).__name__})") from None
        raise FactsUnavailable(str(exc).splitlines()[0]) from None
