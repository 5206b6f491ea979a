"""Staged true-sequential replay: same Hessians and outputs as plain replays, fewer passes."""

from __future__ import annotations

import pytest
import torch

from rac.models import staged
from rac.models.blocks import decoder_blocks, input_groups
from rac.models.capture import capture_block_inputs, collect_hessians, run_block
from rac.models.staged import layout_like, staged_block, verify_layout

ROWS = [[5, 9, 11, 300, 17, 42, 8, 99], [7, 8, 1000, 3], [1, 2, 3, 4, 5, 6]]


def _batches(padded_batch):
    return [padded_batch(rows, lambda mask: mask.float() * 1.5) for rows in (ROWS[:2], ROWS[2:])]


def _shrink(module: torch.nn.Linear, H: torch.Tensor) -> None:
    """A stand-in pruning that depends on H (so a wrong Hessian changes the weights): zero the input
    columns with the smallest diagonal of H."""
    with torch.no_grad():
        keep = H.diagonal() >= H.diagonal().median()
        module.weight.mul_(keep.to(module.weight.dtype))


def _plain(block, groups, inputs, todo):
    """Reference: each group's Hessian from a fresh replay through the groups pruned before it."""
    hessians = {}
    for g in todo:
        hessians[g] = collect_hessians(block, inputs, {g: groups[g][0].module}, "cpu").H[g]
        for info in groups[g]:
            _shrink(info.module, hessians[g])
    return hessians, run_block(block, inputs, "cpu")


@pytest.mark.parametrize("todo", [["attn_in", "attn_out", "mlp_in", "mlp_out"], ["mlp_in", "mlp_out"],
                                  ["attn_in", "attn_out"], ["attn_out", "mlp_out"]])
@pytest.mark.parametrize("store_mlp", [True, False])
def test_staged_matches_plain_replays(tiny_model, todo, store_mlp, monkeypatch, padded_batch):
    model, _ = tiny_model
    if not store_mlp:
        monkeypatch.setattr(staged, "MAX_STORED_MLP_BYTES", 0)
    inputs = capture_block_inputs(model, _batches(padded_batch), "cpu")
    block = decoder_blocks(model)[1]
    original = {k: v.clone() for k, v in block.state_dict().items()}
    groups = input_groups(block)
    expected_H, expected_out = _plain(block, groups, inputs, todo)
    pruned = {k: v.clone() for k, v in block.state_dict().items()}
    block.load_state_dict(original)

    layout = verify_layout(block, groups, inputs, "cpu")
    assert layout is not None and layout.attn is block.self_attn and layout.mlp is block.mlp
    seen = {}

    def on_group(g, sums):
        seen[g] = sums.H[g]
        assert sums.total_weight == pytest.approx(float(sum(w.sum() for w in inputs.weights)))
        for info in groups[g]:
            _shrink(info.module, sums.H[g])

    asked = []
    outputs = staged_block(block, layout, inputs, "cpu", todo, lambda g: asked.append(g) or True, on_group)
    assert asked == todo and list(seen) == todo
    for g in todo:
        assert torch.allclose(seen[g], expected_H[g], rtol=1e-5, atol=1e-5), g
    assert all(torch.equal(pruned[k], v) for k, v in block.state_dict().items())
    for got, want in zip(outputs, expected_out):
        assert torch.allclose(got, want, atol=1e-5)
    assert all("forward" not in m.__dict__ for m in block.modules())  # stand-ins removed


def test_cached_groups_are_not_accumulated(tiny_llama, padded_batch):
    model, _ = tiny_llama
    inputs = capture_block_inputs(model, _batches(padded_batch), "cpu")
    block = decoder_blocks(model)[0]
    groups = input_groups(block)
    layout = verify_layout(block, groups, inputs, "cpu")
    calls, q_calls = [], []
    hook = block.self_attn.q_proj.register_forward_pre_hook(lambda m, a: q_calls.append(1))
    outputs = staged_block(block, layout, inputs, "cpu", ["attn_in", "mlp_out"], lambda g: g == "mlp_out",
                           lambda g, sums: calls.append((g, None if sums is None else sorted(sums.H))))
    hook.remove()
    assert calls == [("attn_in", None), ("mlp_out", ["mlp_out"])]
    assert len(q_calls) == len(inputs)  # attention ran once per batch: no pass for the cached attn_in
    for got, want in zip(outputs, run_block(block, inputs, "cpu")):  # nothing was pruned
        assert torch.allclose(got, want, atol=1e-6)


def test_layouts_that_break_an_assumption_are_refused(tiny_llama, padded_batch):
    model, _ = tiny_llama
    inputs = capture_block_inputs(model, _batches(padded_batch), "cpu")
    blocks = decoder_blocks(model)
    groups = input_groups(blocks[0])
    verified = verify_layout(blocks[0], groups, inputs, "cpu")
    other = layout_like(blocks[1], input_groups(blocks[1]), verified)
    assert other is not None and other.mlp is blocks[1].mlp and other.attn_tail == verified.attn_tail
    assert layout_like(blocks[1], input_groups(blocks[1]), None) is None
    hook = blocks[0].mlp.register_forward_hook(lambda m, a, out: out * 2)  # MLP output != down_proj output
    assert verify_layout(blocks[0], groups, inputs, "cpu") is None
    hook.remove()
    hook = blocks[0].self_attn.register_forward_hook(lambda m, a, out: (out[0] + 1, *out[1:]))
    assert verify_layout(blocks[0], groups, inputs, "cpu") is None
    hook.remove()
    assert verify_layout(blocks[0], {g: v for g, v in groups.items() if g != "mlp_out"}, inputs, "cpu") is None
