"""Decoder-block and linear-layer discovery on tiny Llama and Qwen2."""

from __future__ import annotations

import pytest
from torch import nn

from rac.models.blocks import (
    BlockDiscoveryError,
    block_prefix,
    decoder_blocks,
    find_blocks,
    input_groups,
    linear_modules,
    select_blocks,
)

EXPECTED = {
    "q_proj": ("attn", "attn_in"), "k_proj": ("attn", "attn_in"), "v_proj": ("attn", "attn_in"),
    "o_proj": ("attn", "attn_out"), "gate_proj": ("mlp", "mlp_in"), "up_proj": ("mlp", "mlp_in"),
    "down_proj": ("mlp", "mlp_out"),
}


def test_blocks_and_input_keys(tiny_model):
    model, _ = tiny_model
    blocks = decoder_blocks(model)
    assert len(blocks) == 2 and blocks[1] is model.model.layers[1]
    assert find_blocks(model)[0] == "model.layers" and block_prefix(model, 1) == "model.layers.1"
    linears = linear_modules(blocks[0])
    assert {k: (v.role, v.input_key) for k, v in linears.items()} == EXPECTED
    assert linears["q_proj"].qualified == "self_attn.q_proj"
    assert linears["down_proj"].module is blocks[0].mlp.down_proj
    module, role, key = linears["up_proj"]  # the contract's (module, role, input_key) tuple
    assert module is blocks[0].mlp.up_proj and (role, key) == ("mlp", "mlp_in")
    assert list(input_groups(blocks[0])) == ["attn_in", "attn_out", "mlp_in", "mlp_out"]
    assert [i.name for i in input_groups(blocks[0])["attn_in"]] == ["q_proj", "k_proj", "v_proj"]


def test_embeddings_and_head_never_listed(tiny_model):
    model, _ = tiny_model
    names = {info.module for block in decoder_blocks(model) for info in linear_modules(block).values()}
    assert model.lm_head not in names and model.get_input_embeddings() not in names


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(BlockDiscoveryError, match="BLOCK_PATHS"):
        decoder_blocks(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(BlockDiscoveryError, match="INPUT_KEYS"):
        linear_modules(nn.Sequential(nn.Linear(2, 2)))


def test_select_blocks_thirds():
    assert select_blocks("first_third", 28) == list(range(9))
    assert select_blocks("last_third", 28) == list(range(19, 28))
