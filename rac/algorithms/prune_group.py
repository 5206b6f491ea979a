"""Apply the pruning algorithms to one input group of a block (modules sharing one Hessian).

ALPS members are solved one by one against the group's Hessian (ADMM + PCG). SparseGPT members of a
group share one Cholesky factor (``sparsegpt_prune_group``); Wanda uses the
group's Hessian diagonal as its activation norms; magnitude needs no Hessian. Torch only: which
model the members belong to, and where H comes from, is ``rac.calibration.block_pruner``'s business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from rac.errors import RacError

if TYPE_CHECKING:
    from rac.recipe.settings import PruneSection

METHODS = ("sparsegpt", "wanda", "magnitude", "alps")


class PruneSettingsError(RacError, ValueError):
    """A prune setting that cannot be applied (message names the recipe key)."""


@dataclass(frozen=True)
class PruneSettings:
    """Prune-section settings shared by all scopes (no defaults: they come from the schema-filled recipe)."""

    sequential: bool
    block_size: int
    dampening: float
    mask_selection: str
    true_sequential: bool

    @classmethod
    def from_recipe(cls, prune: PruneSection) -> PruneSettings:
        if not isinstance(prune.true_sequential, bool):
            raise PruneSettingsError(f"prune.true_sequential must be true or false, got {prune.true_sequential!r}")
        return cls(prune.sequential, prune.block_size, float(prune.dampening), prune.mask_selection,
                   prune.true_sequential)

    @staticmethod
    def active(assignment: Any) -> bool:
        """False for a scope that asks for 0% unstructured sparsity (the module stays dense)."""
        return assignment.pattern is not None or assignment.sparsity > 0

    def entry(self, module: str, assignment: Any) -> dict:
        """JSON-able description of how a module is pruned (also hashed into Hessian keys downstream)."""
        if assignment.method not in METHODS:
            raise PruneSettingsError(f"prune scope {assignment.scope!r}: method must be one of {', '.join(METHODS)}, "
                                     f"got {assignment.method!r}")
        pattern = None if assignment.pattern is None else f"{assignment.pattern[0]}:{assignment.pattern[1]}"
        entry = {"module": module, "scope": assignment.scope, "method": assignment.method,
                 "sparsity": None if pattern else assignment.sparsity, "pattern": pattern}
        if assignment.method == "sparsegpt":
            entry.update(block_size=self.block_size, dampening=self.dampening, mask_selection=self.mask_selection)
        elif assignment.method == "alps":
            entry.update(dampening=self.dampening, mask_selection=self.mask_selection)
        return entry


def prune_group(members: list[tuple[Any, Any]], H: torch.Tensor,
                settings: PruneSettings) -> list[tuple[Any, Any, Any, dict]]:
    """Prune ``members`` ((LinearInfo, ScopeAssignment) pairs sharing input Hessian ``H``), in order.

    Returns (info, assignment, PruneResult, entry) per member; the model is not modified."""
    from rac.algorithms.alps import alps_prune
    from rac.algorithms.magnitude import magnitude_prune
    from rac.algorithms.sparsegpt import sparsegpt_prune_group
    from rac.algorithms.wanda import wanda_prune

    entries = [settings.entry(info.name, a) for info, a in members]
    results: list[Any] = [None] * len(members)
    gpt = [i for i, (_, a) in enumerate(members) if a.method == "sparsegpt"]
    if gpt:
        out = sparsegpt_prune_group(
            [members[i][0].module.weight.data for i in gpt], H,
            sparsities=[members[i][1].sparsity for i in gpt], patterns=[members[i][1].pattern for i in gpt],
            block_size=settings.block_size, dampening=settings.dampening, mask_selection=settings.mask_selection)
        for i, result in zip(gpt, out):
            results[i] = result
    for i, (info, a) in enumerate(members):
        if a.method == "wanda":
            results[i] = wanda_prune(info.module.weight.data, torch.diagonal(H), sparsity=a.sparsity, pattern=a.pattern)
        elif a.method == "magnitude":
            results[i] = magnitude_prune(info.module.weight.data, sparsity=a.sparsity, pattern=a.pattern)
        elif a.method == "alps":
            results[i] = alps_prune(info.module.weight.data, H, sparsity=a.sparsity, pattern=a.pattern,
                                    dampening=settings.dampening, per_row=settings.mask_selection == "per_row")
    return [(info, a, results[i], entries[i]) for i, (info, a) in enumerate(members)]


def recon_errors(originals: list[torch.Tensor], pruned: list[torch.Tensor], H: torch.Tensor) -> list[float]:
    """Exact ||(W - W_hat) X||^2 / ||W X||^2 = tr(D H D^T) / tr(W H W^T) per module of one group.

    One float32 GEMM for the whole group: the stacked rows [W; D] times H, then row-wise dots (the
    old per-module code did two products and four dtype/device copies per module)."""
    rows = [w.shape[0] for w in originals]
    total = sum(rows)
    stacked = torch.empty(2 * total, H.shape[0], dtype=torch.float32, device=H.device)
    torch.cat([w.detach().to(H.device, torch.float32) for w in originals], out=stacked[:total])
    torch.cat([w.detach().to(H.device, torch.float32) for w in pruned], out=stacked[total:])
    stacked[total:].neg_().add_(stacked[:total])  # D = W - W_hat
    per_row = (stacked @ H).mul_(stacked).sum(1).double().cpu()
    errors, r0 = [], 0
    for n in rows:
        den = float(per_row[r0 : r0 + n].sum())
        num = float(per_row[total + r0 : total + r0 + n].sum())
        errors.append(round(num / den, 8) if den > 0 else 0.0)
        r0 += n
    return errors
