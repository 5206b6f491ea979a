"""Stage ``hessian``: build and save the calibration set, and precompute the Hessians that are exact
whatever gets pruned (every block in dense-input mode; block 0 in sequential mode, and there only its
first input group, attn_in, with ``prune.true_sequential``).

Hessian cache keys (shared with the prune stage). A Hessian of (block l, input key g) is keyed by

    sha256(HESSIAN_VERSION, code digest, calibration fingerprint, model identity, model dtype,
           replay batch size, l, g, upstream digest)

* code digest = hash of the source of every rac module the prune stage imports, transitively
  (``rac.engine.inputs.module_code_digest``): changing the Hessian, replay or pruning code invalidates
  the stored Hessians without anyone bumping ``HESSIAN_VERSION``;

* calibration fingerprint = sha256 of ``calibration.safetensors`` (token ids, offsets, per-token
  weights and kinds: the prompt/decode weights are part of it);
* upstream digest = a running hash over every module pruned upstream of that input (with method,
  sparsity, pattern, the algorithm's settings and ``prune.true_sequential``): in sequential mode all
  pruned modules of blocks < l, and with ``prune.true_sequential`` also the groups of block l pruned
  before g; in dense-input mode it is empty. A module left dense adds nothing, so a run pruning only
  later blocks reuses the dense Hessians of earlier ones (they are the same in either within-block
  order, while everything downstream of a pruned module differs between the two orders).

Blobs are written on one background thread (``HessianWriter``): the safetensors write and its
sha256 overlap the next block's compute.
"""

from __future__ import annotations

import hashlib
import json
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rac.engine.cache import file_sha256
from rac.engine.stage import Stage, StageContext

if TYPE_CHECKING:
    from rac.recipe.settings import RecipeSettings

HESSIAN_KIND = "hessian"
HESSIAN_VERSION = "1"
EMPTY_UPSTREAM = "dense"


def _sha(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def calibration_fingerprint(hessian_dir: Path) -> str:
    """sha256 of the calibration tensors in a hessian artifact (or its temp dir)."""
    from rac.calibration.mix import CALIB_TENSORS

    return file_sha256(Path(hessian_dir) / CALIB_TENSORS)


def model_identity(ctx: StageContext) -> str:
    """The engine's model identity, resolved here when the context does not carry one."""
    if ctx.model_identity:
        return ctx.model_identity
    from rac.models.load import resolve_model

    return resolve_model(ctx.settings.model.as_dict()).identity


def base_key(calib_fp: str, identity: str, settings: RecipeSettings) -> str:
    """What every Hessian of one calibration replay depends on besides its position and upstream."""
    from rac.engine.inputs import module_code_digest

    assert settings.prune is not None, "Hessians are only computed for a prune section"
    return _sha(HESSIAN_VERSION, module_code_digest("rac.stages.prune"), calib_fp, identity, settings.model.dtype,
                settings.prune.batch_size)


def hessian_key(base: str, block: int, input_key: str, upstream: str) -> str:
    """Cache key of the Hessian of ``input_key`` in ``block`` given the upstream digest."""
    return _sha(base, block, input_key, upstream)[:40]


class Upstream:
    """Running digest of the compression applied upstream of the current input (sequential mode)."""

    def __init__(self) -> None:
        self.digest = EMPTY_UPSTREAM

    def add(self, entry: dict) -> None:
        self.digest = _sha(self.digest, entry)


def replay_batches(calib: Any, settings: RecipeSettings):
    """A factory for the calibration replay batches (fresh iterator per call)."""
    from rac.calibration.replay import iter_batches

    assert settings.prune is not None, "calibration replays serve the prune section"
    batch_size = settings.prune.batch_size
    return lambda: iter_batches(calib, batch_size)


def store_hessian(ctx: StageContext, key: str, input_key: str, H: Any, total_weight: float, block: int) -> None:
    ctx.cache.put_blob(HESSIAN_KIND, key, {input_key: H.detach().cpu().contiguous()},
                       {"block": block, "input_key": input_key, "total_weight": total_weight})


class HessianWriter:
    """Stores Hessian blobs on one background thread; ``close()`` (use ``contextlib.closing``) waits
    for every write and re-raises the first failure. Stored tensors must not be modified afterwards."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hessian-store")
        self.pending: list[Future] = []

    def put(self, key: str, input_key: str, H: Any, total_weight: float, block: int) -> None:
        H = H.detach().cpu()  # device copies happen here, not on the worker
        self.pending.append(self.pool.submit(store_hessian, self.ctx, key, input_key, H, total_weight, block))

    def close(self) -> None:
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pending.clear()
            self.pool.shutdown(wait=True)


def load_hessian(ctx: StageContext, key: str, input_key: str) -> tuple[Any, float] | None:
    """(H summed over tokens, total token weight) on a cache hit."""
    found = ctx.cache.get_blob(HESSIAN_KIND, key)
    if found is None or input_key not in found[0]:
        return None
    tensors, meta = found
    return tensors[input_key], float(meta.get("total_weight", 0.0))


def run(ctx: StageContext) -> dict:
    from rac.calibration.mix import build_calibration_set
    from rac.models.blocks import find_blocks
    from rac.models.capture import BlockWalker
    from rac.models.load import load_model

    start = time.perf_counter()
    settings = ctx.settings
    assert settings.prune is not None, "the hessian stage runs only with a prune section"
    model, tokenizer = load_model(settings.model.as_dict(), "cpu")
    rollout = ctx.inputs.get("rollout")
    calib = build_calibration_set(settings.calibration.as_dict(), tokenizer, Path(rollout) if rollout else None,
                                  settings.calibration.seed)
    calib.save(ctx.out_dir)
    base = base_key(calibration_fingerprint(ctx.out_dir), model_identity(ctx), settings)
    sequential = settings.prune.sequential
    first_group_only = sequential and settings.prune.true_sequential
    blocks = find_blocks(model)[1]
    exact = 1 if sequential else len(blocks)
    walker = BlockWalker(model, replay_batches(calib, settings), ctx.device)
    computed = hits = 0
    handle = ctx.progress.task("hessians", exact)
    with closing(HessianWriter(ctx)) as writer:
        for index in range(exact):
            computed, hits = _block(ctx, writer, walker, blocks, base, index, computed, hits, first_group_only)
            handle.advance()
    handle.close()
    tokens = int(calib.offsets[-1])
    ctx.log.info("hessian: %d sequences, %d tokens, %d Hessians computed, %d cached", len(calib), tokens,
                 computed, hits)
    return {"sequences": len(calib), "tokens": tokens, "hessians_computed": computed, "hessians_cached": hits,
            "exact_blocks": exact, "sequential": sequential, "seconds": round(time.perf_counter() - start, 3)}


def _block(ctx: StageContext, writer: HessianWriter, walker: Any, blocks: list, base: str, index: int,
           computed: int, hits: int, first_group_only: bool) -> tuple[int, int]:
    """The dense-input Hessians of the input groups of one block (one replay for all that are missing;
    with ``first_group_only`` it stops at the first group's input)."""
    from rac.models.blocks import input_groups
    from rac.models.capture import collect_hessians, on_device

    groups = input_groups(blocks[index])
    if first_group_only:
        groups = dict(list(groups.items())[:1])
    keys = {g: hessian_key(base, index, g, EMPTY_UPSTREAM) for g in groups}
    missing = {g: groups[g][0].module for g in groups if not ctx.cache.has_blob(HESSIAN_KIND, keys[g])}
    if missing:
        inputs = walker.inputs_for(index)
        with on_device(blocks[index], ctx.device) as block:
            sums = collect_hessians(block, inputs, missing, ctx.device)
        for g, H in sums.H.items():
            writer.put(keys[g], g, H, sums.total_weight, index)
    return computed + len(missing), hits + len(groups) - len(missing)


STAGE = Stage(
    name="hessian",
    needs=("rollout",),
    reads=("model", "calibration", "prune.sequential", "prune.true_sequential", "prune.batch_size"),
    version="1",
    run=run,
    enabled=lambda recipe: bool(recipe.get("prune")),
    description="calibration set + Hessians exact regardless of pruning",
)
