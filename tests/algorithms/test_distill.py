"""Distillation loss (forward KL, temperature, top-k teacher) and the masked-update helpers."""

from __future__ import annotations

import pytest
import torch

from rac.algorithms.distill import (
    apply_masks,
    count_revived,
    mask_gradients,
    teacher_targets,
    token_kl,
    zero_masks,
)


def test_token_kl_is_forward_kl_and_zero_at_the_teacher():
    torch.manual_seed(0)
    t, s = torch.randn(5, 11), torch.randn(5, 11)
    p, logq = torch.softmax(t, -1), torch.log_softmax(s, -1)
    expected = (p * (p.log() - logq)).sum(-1)  # KL(teacher || student), not the reverse
    assert torch.allclose(token_kl(teacher_targets(t, 1.0), s, 1.0), expected, atol=1e-6)
    reverse = (logq.exp() * (logq - p.log())).sum(-1)
    assert not torch.allclose(expected, reverse, atol=1e-3)
    assert torch.allclose(token_kl(teacher_targets(t, 1.0), t, 1.0), torch.zeros(5), atol=1e-6)


def test_temperature_softens_both_sides_and_scales_by_t_squared():
    torch.manual_seed(1)
    t, s = torch.randn(3, 7), torch.randn(3, 7)
    p, logq = torch.softmax(t / 2, -1), torch.log_softmax(s / 2, -1)
    expected = 4 * (p * (p.log() - logq)).sum(-1)
    assert torch.allclose(token_kl(teacher_targets(t, 2.0), s, 2.0), expected, atol=1e-6)


def test_top_k_teacher_is_renormalised_and_bounded_below_by_zero():
    torch.manual_seed(2)
    t, s = torch.randn(4, 50), torch.randn(4, 50)
    targets = teacher_targets(t, 1.0, top_k=5)
    assert targets.index is not None and targets.index.shape == (4, 5)
    assert torch.allclose(targets.logp.exp().sum(-1), torch.ones(4), atol=1e-6)
    assert (targets.index == t.topk(5, -1).indices).all()
    assert (token_kl(targets, s, 1.0) >= 0).all()
    # a student equal to the renormalised top-k teacher (no mass elsewhere) has zero loss
    student = torch.full_like(t, -1e9).scatter(-1, targets.index, targets.logp)
    assert torch.allclose(token_kl(targets, student, 1.0), torch.zeros(4), atol=1e-5)
    # k >= vocabulary: the full KL
    assert teacher_targets(t, 1.0, top_k=50).index is None


def test_mask_gradients_zeroes_only_pruned_entries():
    w = torch.nn.Parameter(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))
    masks = zero_masks({"w": w})
    (w * torch.tensor([[3.0, 4.0], [5.0, 6.0]])).sum().backward()
    mask_gradients({"w": w}, masks)
    assert w.grad.tolist() == [[0.0, 4.0], [5.0, 0.0]]


def test_reapplied_masks_restore_zeros_that_an_update_revived():
    """An update that ignores the masks (momentum, weight decay, a non-masked gradient) revives zeros;
    re-masking after the step puts them back."""
    torch.manual_seed(3)
    w = torch.nn.Parameter(torch.randn(8, 8).masked_fill(torch.rand(8, 8) < 0.5, 0.0))
    params = {"w": w}
    masks = zero_masks(params)
    opt = torch.optim.SGD([w], lr=0.1, momentum=0.9)
    (w ** 2).sum().backward()
    w.grad.add_(1.0)  # a gradient that is nonzero on pruned entries (not masked)
    opt.step()
    assert count_revived(params, masks) > 0
    apply_masks(params, masks)
    assert count_revived(params, masks) == 0 and (w[masks["w"]] == 0).all()


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_with_masked_gradients_keeps_zeros(weight_decay):
    torch.manual_seed(4)
    w = torch.nn.Parameter(torch.randn(6, 6).masked_fill(torch.rand(6, 6) < 0.5, 0.0))
    params, masks = {"w": w}, zero_masks({"w": w})
    opt = torch.optim.AdamW([w], lr=0.05, weight_decay=weight_decay)
    for _ in range(5):
        opt.zero_grad()
        ((w - 1) ** 2).sum().backward()
        mask_gradients(params, masks)
        opt.step()
    assert count_revived(params, masks) == 0
    assert (w[~masks["w"]] != 0).all()
