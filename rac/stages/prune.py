"""Stage ``prune``: sequential layer-wise pruning (SparseGPT / Wanda / magnitude) per recipe scopes.

Blocks are processed one at a time on ``ctx.device`` with activations on CPU. In sequential mode
(``prune.sequential: true``, as SparseGPT) block l sees the outputs of the already pruned blocks < l,
and inside a block the input groups are pruned in order attn_in (q/k/v), attn_out (o), mlp_in
(gate/up), mlp_out (down), each group's Hessian recomputed through the parts of the block already
pruned (SparseGPT's "true sequential" option): o_proj and down_proj then correct the error of the
layers feeding them. In dense-input mode every Hessian comes from the dense model.
Hessians are cache blobs (see ``rac.stages.hessian`` for the key); a hit skips the forward pass.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from rac.engine.cache import atomic_write_json
from rac.engine.stage import Stage, StageContext
from rac.stages.hessian import (
    EMPTY_UPSTREAM,
    HESSIAN_KIND,
    Upstream,
    base_key,
    calibration_fingerprint,
    hessian_key,
    load_hessian,
    model_identity,
    replay_batches,
    store_hessian,
)
from rac.stages.prune_group import PruneSettings, outside_block_results, prune_group


class PruneStageError(ValueError):
    """A prune section that cannot be applied to this model (message names the key)."""


def _hessian(ctx: StageContext, key: str, group: str, block: int, compute,
             fresh: tuple[torch.Tensor, float] | None = None) -> tuple[torch.Tensor, bool]:
    """Normalised H (sum / total weight) for a group: ``fresh`` (just computed), the cache, or
    ``compute()`` (then stored). Returns (H on the device, cache hit)."""
    found = fresh if fresh is not None else load_hessian(ctx, key, group)
    hit = fresh is None and found is not None
    if found is None:
        H, total = compute()
        store_hessian(ctx, key, group, H, total, block)
        found = (H, total)
    H, total = found
    if total <= 0:
        raise PruneStageError(f"no calibration tokens with positive weight reached Hessian {group} of block {block}")
    return H.to(ctx.device).float() / total, hit


def run(ctx: StageContext) -> dict:
    from safetensors.torch import save_file

    from rac.calibration.mix import CalibrationSet
    from rac.models.blocks import KEY_ORDER, find_blocks, input_groups
    from rac.models.capture import BlockWalker, collect_hessians, on_device
    from rac.models.load import load_model
    from rac.recipe.scopes import assign_scopes

    start = time.perf_counter()
    recipe, device = ctx.recipe, ctx.device
    settings = PruneSettings.from_recipe(recipe.get("prune") or {})
    model, _ = load_model(recipe["model"], "cpu")
    hessian_dir = ctx.inputs.get("hessian")
    if hessian_dir is None:
        raise PruneStageError("prune needs the hessian stage's artifact (calibration set)")
    calib = CalibrationSet.load(hessian_dir)
    base = base_key(calibration_fingerprint(hessian_dir), model_identity(ctx), recipe)
    prefix, blocks = find_blocks(model)
    assignments = assign_scopes(recipe.get("prune") or {}, len(blocks))
    walker = BlockWalker(model, replay_batches(calib, recipe), device)
    upstream = Upstream()
    changed: dict[str, torch.Tensor] = {}
    report: list[dict] = []
    hits = misses = 0
    handle = ctx.progress.task("prune blocks", len(blocks))
    block_seconds: list[float] = []
    for index, block in enumerate(blocks):
        t_block = time.perf_counter()
        groups = input_groups(block)
        todo = {g: [(info, assignments[(index, info.name)]) for info in groups[g]
                    if (index, info.name) in assignments and settings.active(assignments[(index, info.name)])]
                for g in KEY_ORDER if g in groups}
        todo = {g: members for g, members in todo.items() if members}
        with on_device(block, device):
            fresh: dict[str, tuple[torch.Tensor, float]] = {}
            if not settings.sequential and todo:  # dense inputs: one replay gives every missing Hessian
                keys = {g: hessian_key(base, index, g, EMPTY_UPSTREAM) for g in todo}
                missing = {g: groups[g][0].module for g in todo if not ctx.cache.has_blob(HESSIAN_KIND, keys[g])}
                if missing:
                    sums = collect_hessians(block, walker.inputs_for(index), missing, device)
                    for g, H in sums.H.items():
                        store_hessian(ctx, keys[g], g, H, sums.total_weight, index)
                        fresh[g] = (H, sums.total_weight)
            for g, members in todo.items():
                key = hessian_key(base, index, g, upstream.digest if settings.sequential else EMPTY_UPSTREAM)

                def compute(g: str = g, block: Any = block, index: int = index,
                            module: Any = groups[g][0].module) -> tuple[torch.Tensor, float]:
                    sums = collect_hessians(block, walker.inputs_for(index), {g: module}, device)
                    return sums.H[g], sums.total_weight

                H, hit = _hessian(ctx, key, g, index, compute, fresh.get(g))
                hits, misses = hits + hit, misses + (not hit)
                for info, assignment, result, entry in prune_group(members, H, settings):
                    name = f"{prefix}.{index}.{info.qualified}.weight"
                    changed[name] = result.weight.detach().cpu().contiguous()
                    fields = _result_fields(info.module.weight, result, H)  # before the write-back
                    if settings.sequential:
                        with torch.no_grad():
                            info.module.weight.copy_(result.weight)
                        upstream.add({"block": index, **entry})
                    report.append({"block": index, "name": name, "hessian_hit": hit, **entry, **fields})
        block_seconds.append(time.perf_counter() - t_block)
        ctx.log.info("prune: block %d/%d done in %.2fs", index + 1, len(blocks), block_seconds[-1])
        handle.advance()
    handle.close()
    for name, result, entry in outside_block_results(model, assignments, settings):
        changed[name] = result.weight.detach().cpu().contiguous()
        report.append({"block": -1, "name": name, "hessian_hit": None, **entry,
                       "achieved": _sparsity(result.weight), "recon_error": None,
                       "dampening_used": None, "seconds": round(result.seconds, 4)})
    save_file(changed, str(ctx.out_dir / "weights.safetensors"))
    atomic_write_json(ctx.out_dir / "report.json", {"modules": report, "block_seconds": block_seconds})
    return _summary(report, changed, hits, misses, walker.forward_passes, block_seconds, start)


def _sparsity(weight: torch.Tensor) -> float:
    return round(float((weight == 0).sum()) / max(weight.numel(), 1), 6)


def _result_fields(original: torch.Tensor, result: Any, H: torch.Tensor) -> dict:
    """Achieved sparsity and ||(W - W_hat) X||^2 / ||W X||^2 = tr(dW H dW^T) / tr(W H W^T)."""
    return {"achieved": _sparsity(result.weight), "recon_error": _recon_error(original, result.weight, H),
            "dampening_used": result.dampening_used, "seconds": round(float(result.seconds), 4)}


def _recon_error(original: torch.Tensor, pruned: torch.Tensor, H: torch.Tensor) -> float:
    """Relative reconstruction error of the layer output on the calibration inputs (from H alone)."""
    W = original.detach().float().to(H.device)
    delta = W - pruned.detach().float().to(H.device)
    num = float(((delta @ H) * delta).sum())
    den = float(((W @ H) * W).sum())
    return round(num / den, 8) if den > 0 else 0.0


def _summary(report: list[dict], changed: dict, hits: int, misses: int, passes: int,
             block_seconds: list[float], start: float) -> dict:
    pruned = [r for r in report if r.get("achieved") is not None]
    total = sum(t.numel() for t in changed.values())
    zeros = sum(int((t == 0).sum()) for t in changed.values())
    return {
        "modules": len(pruned),
        "mean_sparsity": round(zeros / total, 6) if total else 0.0,
        "hessian_hits": hits,
        "hessian_misses": misses,
        "block_forward_passes": passes,
        "seconds": round(time.perf_counter() - start, 3),
        "seconds_per_block": round(sum(block_seconds) / max(len(block_seconds), 1), 4),
    }


STAGE = Stage(
    name="prune",
    needs=("hessian",),
    reads=("model", "prune"),
    version="1",
    run=run,
    enabled=lambda recipe: bool(recipe.get("prune")),
    description="layer-wise SparseGPT / Wanda / magnitude pruning per scope",
)
