"""Stage ``prune``: sequential layer-wise pruning (SparseGPT / Wanda / magnitude) per recipe scopes.

Blocks are processed one at a time on ``ctx.device`` with activations on CPU. In sequential mode
(``prune.sequential: true``, as SparseGPT) block l sees the outputs of the already pruned blocks < l.
Within a block, ``prune.true_sequential`` picks the order:

* false (default, SparseGPT / llm-compressor): ONE calibration pass of the block collects the
  Hessians of all four input groups (attn_in q/k/v, attn_out o, mlp_in gate/up, mlp_out down) from
  hooks on the linear inputs, every module is pruned, and ONE pass of the pruned block produces
  the next block's inputs: two block passes per block.
* true: the groups are pruned in that order, each group's Hessian recomputed through the parts of
  the block already pruned ("true sequential"): o_proj and down_proj then correct the error of the
  layers feeding them, at about four (partial) block passes per block.

In dense-input mode every Hessian comes from the dense model. Hessians live in the shared
``HessianStore`` (``rac.calibration.hessian_store``: the key includes the within-block order; the
retention policy ``prune.keep_hessians`` decides which are kept); a hit skips the pass.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import torch

from rac.calibration.hessian_store import (
    EMPTY_UPSTREAM,
    HessianStore,
    Upstream,
    hessian_key,
    replay_base_key,
    store_policy,
)
from rac.errors import RacError
from rac.pipeline.cache import atomic_write_json
from rac.pipeline.stage import Stage, StageContext
from rac.stages.prune_group import PruneSettings, outside_block_results, prune_group, recon_errors


class PruneStageError(RacError, ValueError):
    """A prune section that cannot be applied to this model (message names the key)."""


def _hessians(ctx: StageContext, store: HessianStore, keys: dict[str, str], block: Any, groups: dict,
              index: int, inputs: Callable[[], Any], counts: list[int], upstream: str) -> dict[str, tuple[torch.Tensor, bool]]:
    """Normalised H (sum / total weight) on the device and whether it was a cache hit, per input group.

    Cached groups are loaded; all missing ones come from ONE replay of the block on ``inputs()``."""
    from rac.models.capture import collect_hessians
    from rac.models.distributed import reduce_sums

    found: dict[str, tuple[torch.Tensor, float] | None] = {g: store.load(k, g) for g, k in keys.items()}
    missing = {g: groups[g][0].module for g, f in found.items() if f is None}
    if missing:
        sums = reduce_sums(collect_hessians(block, inputs(), missing, ctx.device))
        counts[2] += 1
        for g, H in sums.H.items():
            store.put(keys[g], g, H, sums.total_weight, index, upstream)
            found[g] = (store.canonical(H), sums.total_weight)
    ready = {g: entry for g, entry in found.items() if entry is not None}  # every group, once computed
    return {g: (_normalised(ctx, H, total, g, index), g not in missing) for g, (H, total) in ready.items()}


def run(ctx: StageContext) -> dict:
    from safetensors.torch import save_file

    from rac.calibration.mix import CalibrationSet
    from rac.calibration.replay import iter_batches
    from rac.models.blocks import find_blocks
    from rac.models.capture import BlockWalker
    from rac.models.distributed import shard
    from rac.models.load import load_model
    from rac.recipe.scopes import assign_scopes

    start = time.perf_counter()
    recipe = ctx.settings
    if recipe.prune is None:
        raise PruneStageError("the prune stage needs a prune section")
    settings = PruneSettings.from_recipe(recipe.prune)
    model, _ = load_model(recipe.model.as_dict(), "cpu")
    hessian_dir = ctx.inputs.get("hessian")
    if hessian_dir is None:
        raise PruneStageError("prune needs the hessian stage's artifact (calibration set)")
    calib = CalibrationSet.load(hessian_dir)
    base = replay_base_key(recipe, ctx.model_identity, hessian_dir)
    prefix, blocks = find_blocks(model)
    assignments = assign_scopes(recipe.prune.as_dict(), len(blocks))
    batch_size = recipe.prune.batch_size
    walker = BlockWalker(model, lambda: shard(iter_batches(calib, batch_size)), ctx.device)
    state = _State(Upstream(), {}, [], [0, 0, 0])
    handle = ctx.progress.task("prune blocks", len(blocks))
    block_seconds: list[float] = []
    store = HessianStore(ctx.cache, store_policy(recipe.prune))
    with closing(store):
        for index, block in enumerate(blocks):
            t_block = time.perf_counter()
            _prune_block(ctx, store, settings, walker, state, base, prefix, index, block, assignments)
            block_seconds.append(time.perf_counter() - t_block)
            ctx.log.debug("prune: block %d/%d done in %.2fs", index + 1, len(blocks), block_seconds[-1])
            handle.advance()
    handle.close()
    changed, report = state.changed, state.report
    for name, result, entry in outside_block_results(model, assignments, settings):
        changed[name] = result.weight.detach().cpu().contiguous()
        report.append({"block": -1, "name": name, "hessian_hit": None, **entry,
                       "achieved": _sparsity(result.weight), "recon_error": None,
                       "dampening_used": None, "seconds": round(result.seconds, 4)})
    save_file(changed, str(ctx.out_dir / "weights.safetensors"))
    atomic_write_json(ctx.out_dir / "report.json", {"modules": report, "block_seconds": block_seconds})
    summary = _summary(report, changed, state.counts[0], state.counts[1], walker.forward_passes, block_seconds, start)
    return {**summary, "hessian_passes": state.counts[2], "true_sequential": settings.true_sequential,
            **store.stats()}


@dataclass
class _State:
    """What the block loop accumulates: upstream digest, changed weights, report rows and the counts
    [Hessian hits, Hessian misses, block replays that collected Hessians] (a staged block counts one)."""

    upstream: Upstream
    changed: dict[str, torch.Tensor]
    report: list[dict]
    counts: list[int]
    layouts: dict = field(default_factory=dict)  # block class -> verified staged layout (or None)


def _prune_block(ctx: StageContext, store: HessianStore, settings: PruneSettings, walker: Any, state: _State,
                 base: str, prefix: str, index: int, block: Any, assignments: dict) -> None:
    """Prune every assigned module of one block, in the within-block order the settings ask for."""
    from rac.models.blocks import KEY_ORDER, input_groups
    from rac.models.capture import on_device

    groups = input_groups(block)
    todo = {g: [(info, assignments[(index, info.name)]) for info in groups[g]
                if (index, info.name) in assignments and settings.active(assignments[(index, info.name)])]
            for g in KEY_ORDER if g in groups}
    todo = {g: members for g, members in todo.items() if members}
    if not todo:
        return

    def inputs() -> Any:  # lazy: a block whose Hessians are all cached needs no pass
        return walker.inputs_for(index)

    with on_device(block, ctx.device):
        if settings.sequential and settings.true_sequential:
            if _staged(ctx, store, settings, walker, state, base, prefix, index, block, groups, todo):
                return
            for g, members in todo.items():  # each group's Hessian through the pruned earlier groups
                key = hessian_key(base, index, g, state.upstream.digest)
                H, hit = _hessians(ctx, store, {g: key}, block, groups, index, inputs, state.counts,
                                   state.upstream.digest)[g]
                _apply(settings, state, prefix, index, members, H, hit)
        else:  # one pass for all groups: dense inputs, or the pruned blocks < index
            digest = state.upstream.digest if settings.sequential else EMPTY_UPSTREAM
            keys = {g: hessian_key(base, index, g, digest) for g in todo}
            found = _hessians(ctx, store, keys, block, groups, index, inputs, state.counts, digest)
            for g, members in todo.items():
                _apply(settings, state, prefix, index, members, *found[g])


def _staged(ctx: StageContext, store: HessianStore, settings: PruneSettings, walker: Any, state: _State, base: str,
            prefix: str, index: int, block: Any, groups: dict, todo: dict) -> bool:
    """True-sequential order with one pass per block piece (``rac.models.staged``), which also yields
    the block's outputs for the next block. False when the block's layout does not fit (checked on a
    real batch once per block class): the caller then uses plain replays."""
    from rac.models.distributed import agree, reduce_sums
    from rac.models.staged import layout_like, staged_block, verify_layout

    if _all_cached(store, settings, state, base, index, todo):
        return False  # the plain path prunes from the cache and the walker replays the block lazily
    inputs = walker.inputs_for(index)
    kind = type(block)
    if kind not in state.layouts:
        state.layouts[kind] = verify_layout(block, groups, inputs, ctx.device)
        if not agree(state.layouts[kind] is not None):  # every rank takes the same path (torchrun)
            state.layouts[kind] = None
        if state.layouts[kind] is None:
            ctx.log.info("prune: %s does not fit the staged replay; true-sequential uses plain replays", kind.__name__)
    layout = layout_like(block, groups, state.layouts[kind])
    if layout is None:
        return False
    keys: dict[str, str] = {}
    digests: dict[str, str] = {}
    cached: dict[str, tuple[torch.Tensor, float]] = {}

    def missing(g: str) -> bool:  # called once the groups before g are pruned, so the digest is final
        digests[g] = state.upstream.digest
        keys[g] = hessian_key(base, index, g, digests[g])
        found = store.load(keys[g], g)
        if found is not None:
            cached[g] = found
        return found is None

    def on_group(g: str, sums: Any) -> None:
        if sums is None:
            H, total = cached.pop(g)
        else:
            reduce_sums(sums)
            H, total = sums.H[g], sums.total_weight
            store.put(keys[g], g, H, total, index, digests[g])
            H = store.canonical(H)
        _apply(settings, state, prefix, index, todo[g], _normalised(ctx, H, total, g, index), sums is None)

    outputs = staged_block(block, layout, inputs, ctx.device, list(todo), missing, on_group)
    state.counts[2] += 1
    walker.advance(index, outputs)
    return True


def _all_cached(store: HessianStore, settings: PruneSettings, state: _State, base: str, index: int, todo: dict) -> bool:
    """Whether every true-sequential Hessian of the block is in the cache (keys follow the digest the
    block's own pruning will produce)."""
    upstream = Upstream(state.upstream.digest)
    for g, members in todo.items():
        if not store.has(hessian_key(base, index, g, upstream.digest)):
            return False
        for info, assignment in members:
            upstream.add(_digest_entry(index, settings, settings.entry(info.name, assignment)))
    return True


def _digest_entry(index: int, settings: PruneSettings, entry: dict) -> dict:
    """What a pruned module adds to the upstream digest (shared by the cache check and pruning)."""
    return {"block": index, "true_sequential": settings.true_sequential, **entry}


def _normalised(ctx: StageContext, H: torch.Tensor, total: float, g: str, index: int) -> torch.Tensor:
    """H / total token weight, float32 on the compute device."""
    if total <= 0:
        raise PruneStageError(f"no calibration tokens with positive weight reached Hessian {g} of block {index}")
    return H.to(ctx.device, torch.float32) / total


def _apply(settings: PruneSettings, state: _State, prefix: str, index: int, members: list, H: torch.Tensor,
           hit: bool) -> None:
    """Prune one input group with H; in sequential mode write the weights back and extend the digest."""
    from rac.models.distributed import broadcast_

    results = prune_group(members, H, settings)
    for _, _, result, _ in results:  # under torchrun rank 0's result is the result
        result.weight = broadcast_(result.weight.contiguous())
    errors = recon_errors([info.module.weight for info, _ in members], [r.weight for _, _, r, _ in results], H)
    state.counts[0 if hit else 1] += 1
    for (info, _assignment, result, entry), error in zip(results, errors):
        name = f"{prefix}.{index}.{info.qualified}.weight"
        state.changed[name] = result.weight.detach().cpu().contiguous()
        if settings.sequential:
            with torch.no_grad():
                info.module.weight.copy_(result.weight)
            state.upstream.add(_digest_entry(index, settings, entry))
        state.report.append({"block": index, "name": name, "hessian_hit": hit, **entry,
                             "achieved": _sparsity(result.weight), "recon_error": error,
                             "dampening_used": result.dampening_used, "seconds": round(float(result.seconds), 4)})


def _sparsity(weight: torch.Tensor) -> float:
    return round(float((weight == 0).sum()) / max(weight.numel(), 1), 6)


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
    distributed=True,
)
