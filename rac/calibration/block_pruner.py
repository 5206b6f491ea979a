"""``BlockPruner``: the per-run state of layer-wise pruning, one decoder block at a time.

Blocks are processed one at a time on ``device`` with activations on CPU. In sequential mode
(``prune.sequential: true``, as SparseGPT) block l sees the outputs of the already pruned blocks < l.
Within a block, ``prune.true_sequential`` picks the order:

* true (the schema default): the groups are pruned in the order attn_in (q/k/v), attn_out (o),
  mlp_in (gate/up), mlp_out (down), each group's Hessian recomputed through the parts of the block
  already pruned ("true sequential"): o_proj and down_proj then correct the error of the layers
  feeding them. Llama-style blocks use the staged replay (``rac.models.staged``, about one block pass
  per block); other blocks one plain replay per group.
* false (SparseGPT / llm-compressor order): ONE calibration pass of the block collects the Hessians
  of all four input groups from hooks on the linear inputs, every module is pruned, and ONE pass of
  the pruned block produces the next block's inputs: two block passes per block.

In dense-input mode every Hessian comes from the dense model. Hessians live in the shared
``HessianStore`` (``rac.calibration.hessian_store``: the key includes the within-block order; the
retention policy ``prune.keep_hessians`` decides which are kept); a hit skips the pass.

The pruner owns the store, the settings, the block walker (block inputs), the verified staged
layouts, the weights it changed, the report rows and named counters. ``recalibrate`` swaps in a
new walker and Hessian base key (closed-loop rounds, ``rac.calibration.closed_loop``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from rac.algorithms.prune_group import PruneSettings, PruneSettingsError, prune_group, recon_errors
from rac.calibration.hessian_store import EMPTY_UPSTREAM, HessianStore, Upstream, hessian_key
from rac.errors import RacError


class BlockPruneError(RacError, ValueError):
    """Pruning cannot proceed with this calibration set (the message names the block and group)."""


@dataclass
class PruneCounts:
    """What the block loop counted: Hessians served from the store / computed, and the block replays
    that collected Hessians (a staged block counts one)."""

    hessian_hits: int = 0
    hessian_misses: int = 0
    hessian_passes: int = 0


@dataclass
class BlockPruner:
    """Prunes the blocks of ``model`` per ``assignments`` ((block, module) -> ScopeAssignment)."""

    model: nn.Module
    store: HessianStore
    settings: PruneSettings
    assignments: dict
    base: str  # Hessian base key of the current calibration replay
    walker: Any  # rac.models.capture.BlockWalker over the current calibration set
    device: str
    log: logging.Logger = field(default_factory=lambda: logging.getLogger(__name__))
    upstream: Upstream = field(default_factory=Upstream)
    changed: dict[str, torch.Tensor] = field(default_factory=dict)
    report: list[dict] = field(default_factory=list)
    counts: PruneCounts = field(default_factory=PruneCounts)
    layouts: dict = field(default_factory=dict)  # block class -> verified staged layout (or None)
    block_seconds: list[float] = field(default_factory=list)
    earlier_passes: int = 0  # block forward passes of walkers replaced by ``recalibrate``

    def __post_init__(self) -> None:
        from rac.models.blocks import find_blocks

        self.prefix, self.blocks = find_blocks(self.model)

    @property
    def forward_passes(self) -> int:
        """Block forward passes the walkers made to produce block inputs."""
        return self.earlier_passes + self.walker.forward_passes

    def recalibrate(self, walker: Any, base: str) -> None:
        """Continue on another calibration set: block inputs from ``walker``, Hessians under ``base``."""
        self.earlier_passes += self.walker.forward_passes
        self.walker, self.base = walker, base

    def prune_block(self, index: int) -> None:
        """Prune every assigned module of block ``index``, in the within-block order the settings ask for."""
        from rac.models.blocks import KEY_ORDER, input_groups
        from rac.models.capture import on_device

        start = time.perf_counter()
        block = self.blocks[index]
        groups = input_groups(block)
        todo = {g: [(info, self.assignments[(index, info.name)]) for info in groups[g]
                    if (index, info.name) in self.assignments and self.settings.active(self.assignments[(index, info.name)])]
                for g in KEY_ORDER if g in groups}
        todo = {g: members for g, members in todo.items() if members}
        if todo:
            with on_device(block, self.device):
                self._prune_groups(index, block, groups, todo)
        self.block_seconds.append(time.perf_counter() - start)
        self.log.debug("prune: block %d/%d done in %.2fs", index + 1, len(self.blocks), self.block_seconds[-1])

    def _prune_groups(self, index: int, block: nn.Module, groups: dict, todo: dict) -> None:
        def inputs() -> Any:  # lazy: a block whose Hessians are all cached needs no pass
            return self.walker.inputs_for(index)

        if self.settings.sequential and self.settings.true_sequential:
            if self._staged(index, block, groups, todo):
                return
            for g, members in todo.items():  # each group's Hessian through the pruned earlier groups
                key = hessian_key(self.base, index, g, self.upstream.digest)
                H, hit = self._hessians({g: key}, block, groups, index, inputs, self.upstream.digest)[g]
                self._apply(index, members, H, hit)
        else:  # one pass for all groups: dense inputs, or the pruned blocks < index
            digest = self.upstream.digest if self.settings.sequential else EMPTY_UPSTREAM
            keys = {g: hessian_key(self.base, index, g, digest) for g in todo}
            found = self._hessians(keys, block, groups, index, inputs, digest)
            for g, members in todo.items():
                self._apply(index, members, *found[g])

    def _hessians(self, keys: dict[str, str], block: nn.Module, groups: dict, index: int, inputs: Any,
                  upstream: str) -> dict[str, tuple[torch.Tensor, bool]]:
        """Normalised H (sum / total weight) on the device and whether it was a cache hit, per input group.

        Cached groups are loaded; all missing ones come from ONE replay of the block on ``inputs()``."""
        from rac.models.capture import collect_hessians
        from rac.models.distributed import reduce_sums

        found: dict[str, tuple[torch.Tensor, float] | None] = {g: self.store.load(k, g) for g, k in keys.items()}
        missing = {g: groups[g][0].module for g, f in found.items() if f is None}
        if missing:
            sums = reduce_sums(collect_hessians(block, inputs(), missing, self.device))
            self.counts.hessian_passes += 1
            for g, H in sums.H.items():
                self.store.put(keys[g], g, H, sums.total_weight, index, upstream)
                found[g] = (self.store.canonical(H), sums.total_weight)
        ready = {g: entry for g, entry in found.items() if entry is not None}  # every group, once computed
        return {g: (self._normalised(H, total, g, index), g not in missing) for g, (H, total) in ready.items()}

    def _staged(self, index: int, block: nn.Module, groups: dict, todo: dict) -> bool:
        """True-sequential order with one pass per block piece (``rac.models.staged``), which also yields
        the block's outputs for the next block. False when the block's layout does not fit (checked on a
        real batch once per block class): the caller then uses plain replays."""
        from rac.models.distributed import agree, reduce_sums
        from rac.models.staged import layout_like, staged_block, verify_layout

        if self._all_cached(index, todo):
            return False  # the plain path prunes from the cache and the walker replays the block lazily
        inputs = self.walker.inputs_for(index)
        kind = type(block)
        if kind not in self.layouts:
            self.layouts[kind] = verify_layout(block, groups, inputs, self.device)
            if not agree(self.layouts[kind] is not None):  # every rank takes the same path (torchrun)
                self.layouts[kind] = None
            if self.layouts[kind] is None:
                self.log.info("prune: %s does not fit the staged replay; true-sequential uses plain replays",
                              kind.__name__)
        layout = layout_like(block, groups, self.layouts[kind])
        if layout is None:
            return False
        keys: dict[str, str] = {}
        digests: dict[str, str] = {}
        cached: dict[str, tuple[torch.Tensor, float]] = {}

        def missing(g: str) -> bool:  # called once the groups before g are pruned, so the digest is final
            digests[g] = self.upstream.digest
            keys[g] = hessian_key(self.base, index, g, digests[g])
            found = self.store.load(keys[g], g)
            if found is not None:
                cached[g] = found
            return found is None

        def on_group(g: str, sums: Any) -> None:
            if sums is None:
                H, total = cached.pop(g)
            else:
                reduce_sums(sums)
                H, total = sums.H[g], sums.total_weight
                self.store.put(keys[g], g, H, total, index, digests[g])
                H = self.store.canonical(H)
            self._apply(index, todo[g], self._normalised(H, total, g, index), sums is None)

        outputs = staged_block(block, layout, inputs, self.device, list(todo), missing, on_group)
        self.counts.hessian_passes += 1
        self.walker.advance(index, outputs)
        return True

    def _all_cached(self, index: int, todo: dict) -> bool:
        """Whether every true-sequential Hessian of the block is in the cache (keys follow the digest the
        block's own pruning will produce)."""
        upstream = Upstream(self.upstream.digest)
        for g, members in todo.items():
            if not self.store.has(hessian_key(self.base, index, g, upstream.digest)):
                return False
            for info, assignment in members:
                upstream.add(self._digest_entry(index, self.settings.entry(info.name, assignment)))
        return True

    def _digest_entry(self, index: int, entry: dict) -> dict:
        """What a pruned module adds to the upstream digest (shared by the cache check and pruning)."""
        return {"block": index, "true_sequential": self.settings.true_sequential, **entry}

    def _normalised(self, H: torch.Tensor, total: float, g: str, index: int) -> torch.Tensor:
        """H / total token weight, float32 on the compute device."""
        if total <= 0:
            raise BlockPruneError(f"no calibration tokens with positive weight reached Hessian {g} of block {index}")
        return H.to(self.device, torch.float32) / total

    def _apply(self, index: int, members: list, H: torch.Tensor, hit: bool) -> None:
        """Prune one input group with H; in sequential mode write the weights back and extend the digest."""
        from rac.models.distributed import broadcast_

        results = prune_group(members, H, self.settings)
        for _, _, result, _ in results:  # under torchrun rank 0's result is the result
            result.weight = broadcast_(result.weight.contiguous())
        errors = recon_errors([info.module.weight for info, _ in members], [r.weight for _, _, r, _ in results], H)
        if hit:
            self.counts.hessian_hits += 1
        else:
            self.counts.hessian_misses += 1
        for (info, _assignment, result, entry), error in zip(results, errors):
            name = f"{self.prefix}.{index}.{info.qualified}.weight"
            self.changed[name] = result.weight.detach().cpu().contiguous()
            if self.settings.sequential:
                with torch.no_grad():
                    info.module.weight.copy_(result.weight)
                self.upstream.add(self._digest_entry(index, entry))
            self.report.append({"block": index, "name": name, "hessian_hit": hit, **entry,
                                "achieved": sparsity(result.weight), "recon_error": error,
                                "dampening_used": result.dampening_used, "seconds": round(float(result.seconds), 4)})

    def prune_outside(self) -> None:
        """Magnitude-prune ``lm_head`` / ``embed_tokens`` when a scope names them (their inputs are not
        decoder-block activations, and ``embed_tokens`` has no linear input at all). With tied
        embeddings the two share one tensor, so pruning either prunes both."""
        from rac.algorithms.magnitude import magnitude_prune

        getters = {"lm_head": "get_output_embeddings", "embed_tokens": "get_input_embeddings"}  # transformers methods
        for (block, short), assignment in sorted(self.assignments.items()):
            if block >= 0 or not self.settings.active(assignment):
                continue
            if assignment.method != "magnitude":
                raise PruneSettingsError(
                    f"prune scope {assignment.scope!r}: {short} can only use method magnitude (got "
                    f"{assignment.method!r}); its inputs are not decoder-block activations")
            module = getattr(self.model, getters[short])()
            if module is None:
                raise PruneSettingsError(f"prune scope {assignment.scope!r}: the model has no {short}")
            result = magnitude_prune(module.weight.data, sparsity=assignment.sparsity, pattern=assignment.pattern)
            with torch.no_grad():
                module.weight.copy_(result.weight)
            name = f"{_module_name(self.model, module)}.weight"
            self.changed[name] = result.weight.detach().cpu().contiguous()
            self.report.append({"block": -1, "name": name, "hessian_hit": None,
                                **self.settings.entry(short, assignment), "achieved": sparsity(result.weight),
                                "recon_error": None, "dampening_used": None, "seconds": round(result.seconds, 4)})

    def summary(self, start: float) -> dict:
        """The stage summary's pruning fields (``start``: the stage's ``perf_counter`` at entry)."""
        pruned = [r for r in self.report if r.get("achieved") is not None]
        total = sum(t.numel() for t in self.changed.values())
        zeros = sum(int((t == 0).sum()) for t in self.changed.values())
        return {
            "modules": len(pruned),
            "mean_sparsity": round(zeros / total, 6) if total else 0.0,
            "hessian_hits": self.counts.hessian_hits,
            "hessian_misses": self.counts.hessian_misses,
            "block_forward_passes": self.forward_passes,
            "seconds": round(time.perf_counter() - start, 3),
            "seconds_per_block": round(sum(self.block_seconds) / max(len(self.block_seconds), 1), 4),
            "hessian_passes": self.counts.hessian_passes,
            "true_sequential": self.settings.true_sequential,
            **self.store.stats(),
        }


def sparsity(weight: torch.Tensor) -> float:
    """Fraction of exact zeros (6 decimals)."""
    return round(float((weight == 0).sum()) / max(weight.numel(), 1), 6)


def _module_name(model: nn.Module, target: nn.Module) -> str:
    for name, module in model.named_modules():
        if module is target:
            return name
    raise PruneSettingsError(f"module {type(target).__name__} not found in the model")
