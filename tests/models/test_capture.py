"""Replaying decoder blocks on captured inputs and weighted Hessians of linear-layer inputs."""

from __future__ import annotations

import torch

from rac.models.blocks import decoder_blocks, linear_modules
from rac.models.capture import BlockWalker, capture_block_inputs, collect_hessians, run_block


def _weights(mask: torch.Tensor) -> torch.Tensor:
    return mask.float() * torch.linspace(0.5, 2.0, mask.shape[1])  # non-uniform per-token weights, pads 0


ROWS = [[5, 9, 11, 300, 17, 42, 8, 99], [7, 8, 1000, 3]]


def test_replay_matches_the_full_model(tiny_model, padded_batch):
    model, _ = tiny_model
    batch = padded_batch(ROWS, _weights)
    with torch.no_grad():
        ref = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=True).hidden_states
    walker = BlockWalker(model, lambda: [batch], "cpu")
    real = batch["attention_mask"].bool()
    assert torch.allclose(walker.inputs_for(0).hidden[0][real], ref[0][real], atol=1e-6)
    assert torch.allclose(walker.inputs_for(1).hidden[0][real], ref[1][real], atol=1e-5)
    assert walker.forward_passes == 1


def test_one_attn_in_hessian_equals_weighted_gram(tiny_model, padded_batch):
    model, _ = tiny_model
    batch = padded_batch(ROWS, _weights)
    inputs = capture_block_inputs(model, [batch], "cpu")
    block = decoder_blocks(model)[0]
    lin = linear_modules(block)
    seen = {}
    handles = [lin[n].module.register_forward_pre_hook(lambda m, a, n=n: seen.__setitem__(n, a[0].detach()))
               for n in ("q_proj", "k_proj", "v_proj", "down_proj")]
    run_block(block, inputs, "cpu")
    for h in handles:
        h.remove()
    assert torch.equal(seen["q_proj"], seen["k_proj"]) and torch.equal(seen["q_proj"], seen["v_proj"])
    sums = collect_hessians(block, inputs, {"attn_in": lin["q_proj"].module, "mlp_out": lin["down_proj"].module}, "cpu")
    assert set(sums.H) == {"attn_in", "mlp_out"}
    w = batch["token_weight"].reshape(-1)
    for key, name in (("attn_in", "q_proj"), ("mlp_out", "down_proj")):
        X = seen[name].reshape(-1, seen[name].shape[-1]).double()
        expected = (X.T * w.double()) @ X
        assert torch.allclose(sums.H[key].double(), expected, rtol=1e-4, atol=1e-4)
    assert abs(sums.total_weight - float(w.sum())) < 1e-4


def test_pads_never_enter_a_hessian(tiny_model, padded_batch):
    model, _ = tiny_model
    block = decoder_blocks(model)[0]
    q = linear_modules(block)["q_proj"].module
    padded = collect_hessians(block, capture_block_inputs(model, [padded_batch(ROWS, _weights)], "cpu"), {"attn_in": q}, "cpu")
    alone = [padded_batch([r], _weights) for r in ROWS]
    # per-token weights depend on position only, so both sides weight each real token identically
    for b, r in zip(alone, ROWS):
        b["token_weight"] = padded_batch(ROWS, _weights)["token_weight"][ROWS.index(r), : len(r)][None]
    unpadded = collect_hessians(block, capture_block_inputs(model, alone, "cpu"), {"attn_in": q}, "cpu")
    assert torch.allclose(padded.H["attn_in"], unpadded.H["attn_in"], rtol=1e-4, atol=1e-5)
    assert abs(padded.total_weight - unpadded.total_weight) < 1e-5


def test_unit_weights_give_the_plain_gram_of_real_tokens(tiny_model, padded_batch):
    model, _ = tiny_model
    batch = padded_batch(ROWS, _weights)
    batch["token_weight"] = batch["attention_mask"].float()  # packed-text case: 1 on real tokens, 0 on pads
    inputs = capture_block_inputs(model, [batch], "cpu")
    block = decoder_blocks(model)[0]
    lin = linear_modules(block)
    seen = {}
    handle = lin["o_proj"].module.register_forward_pre_hook(lambda m, a: seen.__setitem__("x", a[0].detach()))
    run_block(block, inputs, "cpu")
    handle.remove()
    sums = collect_hessians(block, inputs, {"attn_out": lin["o_proj"].module, "attn_in": lin["q_proj"].module}, "cpu")
    X = seen["x"][batch["attention_mask"].bool()].double()
    assert torch.allclose(sums.H["attn_out"].double(), X.T @ X, rtol=1e-4, atol=1e-4)
    assert sums.total_weight == len(ROWS[0]) + len(ROWS[1])
