"""Token-level distillation loss and mask-preserving updates (torch only), for the recover stage.

Direction: forward KL(dense || pruned) = sum_v p_dense(v) (log p_dense(v) - log q_pruned(v)) per token.
On the dense model's own traces this is word-level knowledge distillation (Hinton et al.; Kim & Rush):
the expectation is under the teacher, so the pruned model is pushed to cover every continuation the
dense model gives mass to, including low-probability but decisive ones such as EOS or the
end-of-reasoning marker (rambling is a failure to put mass there). Reverse KL is mode-seeking and may
ignore such tokens; it would also need the student's own samples to be on-policy. Forward KL also lets
the teacher be truncated to its top-k tokens (``topk_teacher``), which is what a 7B+ run stores.

Both logits are divided by the temperature T and the loss is multiplied by T^2 (gradient scale
independent of T, as in Hinton et al.).

Masked updates: ``zero_masks`` takes the masks from the pruned weights (True where a weight is zero);
``mask_gradients`` zeroes their gradients before the optimizer step and ``apply_masks`` re-zeroes the
weights after it (AdamW with a zero gradient keeps a zero weight in exact arithmetic, but re-masking
makes the guarantee independent of optimizer, weight decay and numerics).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class TeacherTargets:
    """The teacher's log-probabilities at the loss positions: full [N, V] (``index`` None) or its top-k
    log-probabilities renormalised over those k tokens [N, k] with their vocabulary ``index`` [N, k]."""

    logp: Tensor
    index: Tensor | None = None

    def to(self, device: str | torch.device) -> TeacherTargets:
        return TeacherTargets(self.logp.to(device), None if self.index is None else self.index.to(device))


def teacher_targets(teacher_logits: Tensor, temperature: float, top_k: int | None = None) -> TeacherTargets:
    """Teacher targets from its logits [N, V] at temperature T (top-k: the k most likely tokens only)."""
    logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if top_k is None or top_k >= logp.shape[-1]:
        return TeacherTargets(logp)
    values, index = logp.topk(top_k, dim=-1)
    return TeacherTargets(torch.log_softmax(values, dim=-1), index)


def token_kl(targets: TeacherTargets, student_logits: Tensor, temperature: float) -> Tensor:
    """Per-token KL(teacher || student) [N], times T^2.

    Top-k targets: sum over the k teacher tokens of p~ (log p~ - log q), q the student's full softmax
    gathered there; it is >= KL(p~ || q renormalised) >= 0 and 0 only when the student matches the
    renormalised teacher on those k tokens and puts no mass elsewhere."""
    logq = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    if targets.index is not None:
        logq = logq.gather(-1, targets.index)
    p = targets.logp.exp()
    return (p * (targets.logp - logq)).sum(-1) * temperature ** 2


def zero_masks(params: dict[str, Tensor]) -> dict[str, Tensor]:
    """Name -> bool mask of the entries that are exactly zero (the pruned ones) of each parameter."""
    return {name: (p.detach() == 0) for name, p in params.items()}


def mask_gradients(params: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    """Zero the gradient of every masked (pruned) entry, in place."""
    for name, p in params.items():
        if p.grad is not None and name in masks:
            p.grad.masked_fill_(masks[name], 0.0)


@torch.no_grad()
def apply_masks(params: dict[str, Tensor], masks: dict[str, Tensor]) -> None:
    """Set every masked (pruned) entry back to zero, in place."""
    for name, p in params.items():
        if name in masks:
            p.masked_fill_(masks[name], 0.0)


def count_revived(params: dict[str, Tensor], masks: dict[str, Tensor]) -> int:
    """How many masked entries are no longer zero (0 after a correct masked update)."""
    return sum(int((p.detach()[masks[name]] != 0).sum()) for name, p in params.items() if name in masks)
