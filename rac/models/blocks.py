"""Generic discovery of decoder blocks and their linear layers (a small adapter table, no per-model code).

Decoder blocks are the first ``nn.ModuleList`` found at one of ``BLOCK_PATHS`` (Llama, Qwen2, Mistral,
Gemma, Phi-3: ``model.layers``; multimodal wrappers: ``model.language_model.layers``; GPT-2/Falcon:
``transformer.h``; OPT: ``model.decoder.layers``; GPT-NeoX: ``gpt_neox.layers``).

Linear layers inside a block are named by their last attribute (``q_proj``) and grouped by the input
they read (``INPUT_KEYS``): modules with the same input key see the same activations and share one
Hessian. Embeddings and ``lm_head`` live outside the blocks, so they are never returned here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from rac.errors import RacError

BLOCK_PATHS: tuple[str, ...] = (
    "model.layers",
    "model.language_model.layers",
    "language_model.model.layers",
    "model.decoder.layers",
    "transformer.h",
    "transformer.blocks",
    "gpt_neox.layers",
)

# short name -> (role, input key). Order inside a block: attn_in, attn_out, mlp_in, mlp_out.
INPUT_KEYS: dict[str, tuple[str, str]] = {
    "q_proj": ("attn", "attn_in"),
    "k_proj": ("attn", "attn_in"),
    "v_proj": ("attn", "attn_in"),
    "qkv_proj": ("attn", "attn_in"),
    "query_key_value": ("attn", "attn_in"),
    "o_proj": ("attn", "attn_out"),
    "out_proj": ("attn", "attn_out"),
    "gate_proj": ("mlp", "mlp_in"),
    "up_proj": ("mlp", "mlp_in"),
    "gate_up_proj": ("mlp", "mlp_in"),
    "fc1": ("mlp", "mlp_in"),
    "dense_h_to_4h": ("mlp", "mlp_in"),
    "down_proj": ("mlp", "mlp_out"),
    "fc2": ("mlp", "mlp_out"),
    "dense_4h_to_h": ("mlp", "mlp_out"),
}
KEY_ORDER: tuple[str, ...] = ("attn_in", "attn_out", "mlp_in", "mlp_out")
ATTN_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_MODULES = ("gate_proj", "up_proj", "down_proj")


class BlockDiscoveryError(RacError, ValueError):
    """The model's decoder blocks or their linear layers could not be found."""


@dataclass(frozen=True)
class LinearInfo:
    """One linear layer of a block. Iterates as ``(module, role, input_key)`` (the contract's tuple)."""

    name: str  # short name, e.g. "q_proj"
    qualified: str  # path inside the block, e.g. "self_attn.q_proj"
    module: nn.Linear
    role: str  # "attn" | "mlp"
    input_key: str  # "attn_in" | "attn_out" | "mlp_in" | "mlp_out"

    def __iter__(self) -> Iterator[object]:
        return iter((self.module, self.role, self.input_key))


def _get_path(root: nn.Module, path: str) -> object | None:
    obj: object = root
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def find_blocks(model: nn.Module) -> tuple[str, list[nn.Module]]:
    """(state-dict prefix such as ``model.layers``, the decoder blocks in order)."""
    for path in BLOCK_PATHS:
        found = _get_path(model, path)
        if isinstance(found, nn.ModuleList) and len(found) > 0:
            return path, list(found)
    raise BlockDiscoveryError(
        f"{type(model).__name__}: no decoder blocks found at any of {', '.join(BLOCK_PATHS)}; "
        "add the attribute path to rac.models.blocks.BLOCK_PATHS"
    )


def decoder_blocks(model: nn.Module) -> list[nn.Module]:
    """The decoder blocks of a causal LM, in order."""
    return find_blocks(model)[1]


def block_prefix(model: nn.Module, index: int) -> str:
    """State-dict prefix of block ``index``, e.g. ``model.layers.3``."""
    return f"{find_blocks(model)[0]}.{index}"


def linear_modules(block: nn.Module) -> dict[str, LinearInfo]:
    """The prunable linear layers of one block by short name, in the block's input-key order."""
    found: dict[str, LinearInfo] = {}
    for qualified, module in block.named_modules():
        short = qualified.rsplit(".", 1)[-1]
        if not isinstance(module, nn.Linear) or short not in INPUT_KEYS:
            continue
        if short in found:
            raise BlockDiscoveryError(f"two linear layers named {short!r} in one block: {found[short].qualified}, {qualified}")
        role, key = INPUT_KEYS[short]
        found[short] = LinearInfo(short, qualified, module, role, key)
    if not found:
        raise BlockDiscoveryError(
            f"{type(block).__name__}: no linear layers with known names ({', '.join(INPUT_KEYS)}); "
            "extend rac.models.blocks.INPUT_KEYS"
        )
    return dict(sorted(found.items(), key=lambda item: KEY_ORDER.index(item[1].input_key)))


def input_groups(block: nn.Module) -> dict[str, list[LinearInfo]]:
    """Linear layers grouped by input key (modules of one group share one Hessian), in key order."""
    groups: dict[str, list[LinearInfo]] = {}
    for info in linear_modules(block).values():
        groups.setdefault(info.input_key, []).append(info)
    return groups


def select_blocks(spec: object, n_blocks: int) -> list[int]:
    """Block indices a scope's ``blocks`` value selects (thirds over decoder blocks; see rac.recipe.scopes)."""
    from rac.recipe.scopes import select_blocks as _select

    return list(_select(spec, n_blocks))
