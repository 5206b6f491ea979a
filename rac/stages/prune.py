"""Stage ``prune``: sequential layer-wise pruning (SparseGPT / Wanda / magnitude / ALPS) per recipe scopes.

The machinery lives below the stages: ``rac.calibration.block_pruner.BlockPruner`` (block order,
Hessians from the shared store, within-block order, report rows, counters) and
``rac.algorithms.prune_group`` (the algorithms on one input group). This module wires them to the
run: model, calibration set, scopes, and the artifact files. With ``prune.closed_loop.rounds`` > 1
the pruned blocks form that many groups and, before each group but the first, the partially pruned
model regenerates the calibration rollouts (``rac.calibration.closed_loop``; its docstring states the
objective).
"""

from __future__ import annotations

import time
from contextlib import closing
from typing import TYPE_CHECKING, Any

from rac.algorithms.prune_group import PruneSettings
from rac.calibration.hessian_store import HessianStore, replay_base_key, store_policy
from rac.engine.cache import atomic_write_json
from rac.engine.stage import Stage, StageContext
from rac.errors import RacError

if TYPE_CHECKING:
    from rac.calibration.block_pruner import BlockPruner
    from rac.calibration.mix import CalibrationSet
    from rac.recipe.settings import RecipeSettings


class PruneStageError(RacError, ValueError):
    """A prune section that cannot be applied to this model (message names the key)."""


def run(ctx: StageContext) -> dict:
    from safetensors.torch import save_file

    from rac.calibration.block_pruner import BlockPruner
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
    model, tokenizer = load_model(recipe.model.as_dict(), "cpu")
    hessian_dir = ctx.inputs.get("hessian")
    if hessian_dir is None:
        raise PruneStageError("prune needs the hessian stage's artifact (calibration set)")
    calib = CalibrationSet.load(hessian_dir)
    base = replay_base_key(recipe, ctx.model_identity, hessian_dir)
    n_blocks = len(find_blocks(model)[1])
    assignments = assign_scopes(recipe.prune.as_dict(), n_blocks)
    groups = _block_groups(recipe, settings, assignments)
    batch_size = recipe.prune.batch_size
    walker = BlockWalker(model, lambda: shard(iter_batches(calib, batch_size)), ctx.device)
    rounds: list[dict] = []
    with closing(HessianStore(ctx.cache, store_policy(recipe.prune))) as store:
        pruner = BlockPruner(model, store, settings, assignments, base, walker, ctx.device, ctx.log)
        handle = ctx.progress.task("prune blocks", n_blocks)
        starts = {group[0]: r for r, group in enumerate(groups) if r > 0 and group}
        for index in range(n_blocks):
            if index in starts:  # closed loop: recalibrate on the partially pruned model's rollouts
                rounds.append(_next_round(ctx, pruner, calib, tokenizer, base, starts[index], groups[starts[index]]))
            pruner.prune_block(index)
            handle.advance()
        handle.close()
    pruner.prune_outside()
    save_file(pruner.changed, str(ctx.out_dir / "weights.safetensors"))
    atomic_write_json(ctx.out_dir / "report.json", {"modules": pruner.report, "block_seconds": pruner.block_seconds})
    summary = pruner.summary(start)
    if len(groups) > 1:
        summary["closed_loop"] = [_dense_round(calib, groups[0]), *rounds]
        atomic_write_json(ctx.out_dir / "closed_loop.json", {"rounds": summary["closed_loop"]})
    return summary


def _block_groups(recipe: RecipeSettings, settings: PruneSettings, assignments: dict) -> list[list[int]]:
    """The closed loop's groups of pruned blocks (one group without it); checked before any work."""
    from rac.calibration.closed_loop import block_groups
    from rac.models.distributed import world_size

    assert recipe.prune is not None
    rounds = recipe.prune.closed_loop.rounds
    if rounds > 1:
        if recipe.calibration.kind != "rac":
            raise PruneStageError(f"prune.closed_loop.rounds {rounds} regenerates on-policy rollouts: it needs "
                                  f"calibration.kind rac, got {recipe.calibration.kind!r}")
        if not recipe.prune.sequential:
            raise PruneStageError("prune.closed_loop.rounds > 1 needs prune.sequential true (later blocks see "
                                  "the pruned blocks' outputs)")
        if world_size() > 1:
            raise PruneStageError("prune.closed_loop.rounds > 1 is not supported under torchrun yet")
    pruned = sorted({block for (block, _), a in assignments.items() if block >= 0 and settings.active(a)})
    return block_groups(pruned, rounds)


def _next_round(ctx: StageContext, pruner: BlockPruner, calib: CalibrationSet, tokenizer: Any, base: str,
                round_index: int, group: list[int]) -> dict:
    """Rollouts of the partially pruned model on the calibration prompts become the calibration set of
    the blocks in ``group`` (saved as ``closed_loop_round<r>/``); returns the round's statistics."""
    from rac.calibration.closed_loop import calibration_prompts, regenerate, round_base_key
    from rac.calibration.replay import iter_batches
    from rac.models.capture import BlockWalker
    from rac.models.distributed import shard
    from rac.models.load import load_model

    recipe = ctx.settings
    assert recipe.prune is not None
    dense = None
    if recipe.calibration.weights.position.kind == "confidence":
        dense = load_model(recipe.model.as_dict(), "cpu")[0]
    visited, stats = regenerate(pruner.model, tokenizer, calibration_prompts(calib), recipe.calibration,
                                ctx.device, round_index, dense)
    visited.save(ctx.out_dir / f"closed_loop_round{round_index + 1}")
    batch_size = recipe.prune.batch_size
    walker = BlockWalker(pruner.model, lambda: shard(iter_batches(visited, batch_size)), ctx.device)
    pruner.recalibrate(walker, round_base_key(base, round_index, visited))
    ctx.log.info("prune: closed-loop round %d (blocks %d-%d): %d tokens generated, mean rollout %.1f tokens, "
                 "%.1fs", round_index + 1, group[0], group[-1], stats["tokens_generated"],
                 stats["mean_rollout_len"], stats["seconds"])
    return {**stats, "blocks": [group[0], group[-1]]}


def _dense_round(calib: CalibrationSet, group: list[int]) -> dict:
    """Round 1's statistics: the dense model's rollouts of the calibration set (nothing generated here)."""
    from rac.calibration.closed_loop import decode_lengths

    lengths = decode_lengths(calib)
    return {"round": 1, "blocks": [group[0], group[-1]], "rollouts": len(lengths), "tokens_generated": 0,
            "mean_rollout_len": round(sum(lengths) / max(len(lengths), 1), 3), "seconds": 0.0}


STAGE = Stage(
    name="prune",
    needs=("hessian",),
    # the closed loop regenerates rollouts (calibration.rollout) weighted like the calibration set
    reads=("model", "prune", "calibration.kind", "calibration.rollout", "calibration.weights"),
    version="1",
    run=run,
    enabled=lambda recipe: bool(recipe.get("prune")),
    description="layer-wise SparseGPT / Wanda / magnitude pruning per scope",
    distributed=True,
)
