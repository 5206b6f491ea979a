"""Stage ``hessian``: build and save the calibration set, and precompute the Hessians that are exact
whatever gets pruned (every block in dense-input mode; block 0 in sequential mode, and there only its
first input group, attn_in, with ``prune.true_sequential``).

The Hessians go to the shared ``HessianStore`` (``rac.calibration.hessian_store``: keys, formats,
retention); these are always kept, since the prune stage reads them.
"""

from __future__ import annotations

import time
from contextlib import closing
from pathlib import Path
from typing import Any

from rac.calibration.hessian_store import EMPTY_UPSTREAM, HessianStore, StorePolicy, hessian_key, replay_base_key
from rac.pipeline.stage import Stage, StageContext


def run(ctx: StageContext) -> dict:
    from rac.calibration.mix import build_calibration_set
    from rac.calibration.position import apply_position_weights, check_position
    from rac.calibration.replay import iter_batches
    from rac.models.blocks import find_blocks
    from rac.models.capture import BlockWalker
    from rac.models.distributed import shard
    from rac.models.load import load_model

    start = time.perf_counter()
    settings = ctx.settings
    prune = settings.prune
    if prune is None:
        raise ValueError("the hessian stage runs only with a prune section")
    model, tokenizer = load_model(settings.model.as_dict(), "cpu")
    rollout = ctx.inputs.get("rollout")
    calib = build_calibration_set(settings.calibration.as_dict(), tokenizer, Path(rollout) if rollout else None,
                                  settings.calibration.seed)
    position = settings.calibration.weights.position
    check_position(position.as_dict(), settings.calibration.kind)
    apply_position_weights(calib, position.as_dict(), tokenizer, model if position.kind == "confidence" else None,
                           ctx.device)
    calib.save(ctx.out_dir)
    base = replay_base_key(settings, ctx.model_identity, ctx.out_dir)
    sequential = prune.sequential
    first_group_only = sequential and prune.true_sequential
    blocks = find_blocks(model)[1]
    exact = 1 if sequential else len(blocks)
    batch_size = prune.batch_size
    walker = BlockWalker(model, lambda: shard(iter_batches(calib, batch_size)), ctx.device)
    computed = hits = 0
    handle = ctx.progress.task("hessians", exact)
    with closing(HessianStore(ctx.cache, StorePolicy(storage=prune.hessian_storage))) as store:
        for index in range(exact):
            computed, hits = _block(store, walker, blocks, base, index, computed, hits, first_group_only, ctx.device)
            handle.advance()
    handle.close()
    tokens = int(calib.offsets[-1])
    ctx.log.info("hessian: %d sequences, %d tokens, %d Hessians computed, %d cached", len(calib), tokens,
                 computed, hits)
    return {"sequences": len(calib), "tokens": tokens, "hessians_computed": computed, "hessians_cached": hits,
            "exact_blocks": exact, "sequential": sequential, "seconds": round(time.perf_counter() - start, 3)}


def _block(store: HessianStore, walker: Any, blocks: list, base: str, index: int,
           computed: int, hits: int, first_group_only: bool, device: str) -> tuple[int, int]:
    """The dense-input Hessians of the input groups of one block (one replay for all that are missing;
    with ``first_group_only`` it stops at the first group's input)."""
    from rac.models.blocks import input_groups
    from rac.models.capture import collect_hessians, on_device
    from rac.models.distributed import reduce_sums

    groups = input_groups(blocks[index])
    if first_group_only:
        groups = dict(list(groups.items())[:1])
    keys = {g: hessian_key(base, index, g, EMPTY_UPSTREAM) for g in groups}
    missing = {g: groups[g][0].module for g in groups if not store.has(keys[g])}
    if missing:
        inputs = walker.inputs_for(index)
        with on_device(blocks[index], device) as block:
            sums = reduce_sums(collect_hessians(block, inputs, missing, device))
        for g, H in sums.H.items():
            store.put(keys[g], g, H, sums.total_weight, index, EMPTY_UPSTREAM, required=True)
    return computed + len(missing), hits + len(groups) - len(missing)


STAGE = Stage(
    name="hessian",
    needs=("rollout",),
    reads=("model", "calibration", "prune.sequential", "prune.true_sequential", "prune.batch_size",
           "prune.hessian_storage"),
    version="2",  # 2: calibration.weights.position
    run=run,
    enabled=lambda recipe: bool(recipe.get("prune")),
    description="calibration set + Hessians exact regardless of pruning",
    distributed=True,
)
