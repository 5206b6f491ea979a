"""Stage ``prune``: sequential layer-wise pruning (SparseGPT / Wanda / magnitude / ALPS) per recipe scopes.

The machinery lives below the stages: ``rac.calibration.block_pruner.BlockPruner`` (block order,
Hessians from the shared store, within-block order, report rows, counters) and
``rac.algorithms.prune_group`` (the algorithms on one input group). This module wires them to the
run: model, calibration set, scopes, and the artifact files.
"""

from __future__ import annotations

import time
from contextlib import closing

from rac.algorithms.prune_group import PruneSettings
from rac.calibration.hessian_store import HessianStore, replay_base_key, store_policy
from rac.engine.cache import atomic_write_json
from rac.engine.stage import Stage, StageContext
from rac.errors import RacError


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
    model, _ = load_model(recipe.model.as_dict(), "cpu")
    hessian_dir = ctx.inputs.get("hessian")
    if hessian_dir is None:
        raise PruneStageError("prune needs the hessian stage's artifact (calibration set)")
    calib = CalibrationSet.load(hessian_dir)
    base = replay_base_key(recipe, ctx.model_identity, hessian_dir)
    assignments = assign_scopes(recipe.prune.as_dict(), len(find_blocks(model)[1]))
    batch_size = recipe.prune.batch_size
    walker = BlockWalker(model, lambda: shard(iter_batches(calib, batch_size)), ctx.device)
    with closing(HessianStore(ctx.cache, store_policy(recipe.prune))) as store:
        pruner = BlockPruner(model, store, settings, assignments, base, walker, ctx.device, ctx.log)
        handle = ctx.progress.task("prune blocks", len(pruner.blocks))
        for index in range(len(pruner.blocks)):
            pruner.prune_block(index)
            handle.advance()
        handle.close()
    pruner.prune_outside()
    save_file(pruner.changed, str(ctx.out_dir / "weights.safetensors"))
    atomic_write_json(ctx.out_dir / "report.json", {"modules": pruner.report, "block_seconds": pruner.block_seconds})
    return pruner.summary(start)


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
