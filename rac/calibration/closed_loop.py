"""Closed-loop RAC (``prune.closed_loop.rounds``): calibrate later blocks on what the pruned model visits.

Plain RAC calibrates every block on the dense model's own rollouts. A pruned model, once it starts to
drift, visits other token sequences (longer, loopier traces) and other hidden states than the dense
model does, so the blocks pruned last are calibrated on states the pruned model rarely reaches. With
``rounds: R`` the pruned decoder blocks (those a scope prunes) form R consecutive groups; after each
group but the last,
the PARTIALLY pruned model (groups so far pruned, the rest still dense) generates new rollouts for the
same calibration prompts with the same sampling as ``calibration.rollout`` (t_max, temperature, top_p,
top_k, seed, samples_per_prompt; through ``rac.engines.hf.HFEngine``, the model in memory), and the
next group is calibrated on those token sequences, replayed through the already pruned blocks.

Objective (per linear layer of a remaining block, W its dense weight, X_v its inputs on the visited
sequences, i.e. the outputs of the pruned blocks below on the pruned model's own tokens):

    min_{W' sparse} || W X_v - W' X_v ||_F^2      (token weights as in the Hessian: H = X_v diag(w) X_v^T)

The target stays the dense layer: W' must reproduce what the DENSE weights compute on the inputs the
pruned model actually produces. This is exactly the objective SparseGPT, Wanda and ALPS already solve
given the Hessian H of the visited inputs, so the existing algorithms apply unchanged, and it is the
same objective sequential SparseGPT uses for upstream pruning error (inputs through the pruned blocks
below), now extended to the token sequences. The asymmetric target ||W X_dense - W' X_v|| (match the
dense model's activations on the same tokens) is not implemented: it needs the dense model's inputs
aligned token by token with the pruned replay and the cross term X_dense X_v^T per layer.

Rollouts are kept whatever their finish (``on_truncated`` and ``filter_correct`` are not applied):
the truncated, rambling traces are precisely the states the later blocks should see. Token weights
follow ``calibration.weights`` (prompt / decode and the position lever; ``confidence`` asks the dense
model, loaded once more for it).
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import torch

from rac.calibration.mix import KIND_DECODE, KIND_PROMPT, CalibrationSet
from rac.errors import RacError
from rac.hashing import json_digest

if TYPE_CHECKING:
    from rac.recipe.settings import CalibrationSettings


class ClosedLoopError(RacError, ValueError):
    """Closed-loop settings that cannot run (the message names the recipe key)."""


def block_groups(blocks: list[int], rounds: int) -> list[list[int]]:
    """The pruned ``blocks`` (ascending) split into ``rounds`` consecutive, non-empty groups (sizes
    differ by at most one)."""
    if not 1 <= rounds <= max(len(blocks), 1):
        raise ClosedLoopError(f"prune.closed_loop.rounds must be between 1 and the number of pruned decoder "
                              f"blocks ({len(blocks)}), got {rounds}")
    bounds = [round(k * len(blocks) / rounds) for k in range(rounds + 1)]
    return [blocks[a:b] for a, b in zip(bounds, bounds[1:])]


def calibration_prompts(calib: CalibrationSet) -> list[list[int]]:
    """The distinct prompts of a RAC calibration set (each trace's prompt tokens), in first-seen order."""
    prompts: list[list[int]] = []
    seen: set[tuple[int, ...]] = set()
    for i in range(len(calib)):
        ids, _, kinds = calib.sequence(i)
        prompt = ids[kinds == KIND_PROMPT].tolist()
        if prompt and tuple(prompt) not in seen:
            seen.add(tuple(prompt))
            prompts.append(prompt)
    if not prompts:
        raise ClosedLoopError("prune.closed_loop needs calibration.kind rac: the calibration set has no prompts")
    return prompts


def decode_lengths(calib: CalibrationSet) -> list[int]:
    """Decode tokens per sequence."""
    return [int((calib.sequence(i)[2] == KIND_DECODE).sum()) for i in range(len(calib))]


def build_set(prompts: list[list[int]], completions: list[list[list[int]]], w_prompt: float,
              w_decode: float, stats: dict) -> CalibrationSet:
    """A calibration set of prompt + completion traces, every sample of each prompt, in order."""
    ids: list[int] = []
    kinds: list[int] = []
    offsets = [0]
    for prompt, samples in zip(prompts, completions):
        for completion in samples:
            ids += prompt + completion
            kinds += [KIND_PROMPT] * len(prompt) + [KIND_DECODE] * len(completion)
            offsets.append(len(ids))
    kind = torch.tensor(kinds, dtype=torch.int8)
    weight = torch.where(kind == KIND_PROMPT, torch.tensor(w_prompt), torch.tensor(w_decode)).to(torch.float32)
    return CalibrationSet(torch.tensor(ids, dtype=torch.int32), torch.tensor(offsets, dtype=torch.int64), weight,
                          kind, stats)


def regenerate(model: Any, tokenizer: Any, prompts: list[list[int]], calibration: CalibrationSettings,
               device: str, round_index: int, dense: Any = None) -> tuple[CalibrationSet, dict]:
    """Rollouts of ``model`` (partially pruned, in memory) for ``prompts``, as a calibration set weighted
    like the recipe's, and the round's statistics (tokens generated, mean rollout length, seconds).
    ``dense``: the dense model, only for the ``confidence`` position lever."""
    from rac.calibration.position import apply_position_weights
    from rac.engines.base import SamplingConfig
    from rac.engines.hf import HFEngine

    start = time.perf_counter()
    cfg = calibration.rollout
    sampling = SamplingConfig(max_new_tokens=cfg.t_max, temperature=float(cfg.temperature), top_p=float(cfg.top_p),
                              top_k=cfg.top_k, seed=cfg.seed, n=cfg.samples_per_prompt)
    model.to(device)
    try:
        engine = HFEngine(model, tokenizer, batch_size=cfg.batch_size)
        outputs = engine.generate(prompts, sampling)
        engine.close()
    finally:
        model.to("cpu")
    completions = [[list(gen.completion_ids) for gen in gens] for gens in outputs]
    lengths = [len(c) for samples in completions for c in samples]
    truncated = sum(gen.finish_reason == "length" for gens in outputs for gen in gens)
    seconds_generate = time.perf_counter() - start
    stats: dict[str, Any] = {"round": round_index + 1, "prompts": len(prompts), "rollouts": len(lengths),
             "tokens_generated": sum(lengths), "mean_rollout_len": round(sum(lengths) / max(len(lengths), 1), 3),
             "truncated": truncated, "generate_seconds": round(seconds_generate, 3)}
    weights = calibration.weights
    calib = build_set(prompts, completions, float(weights.prompt), float(weights.decode), {"closed_loop": stats})
    position = weights.position
    stats["position"] = apply_position_weights(calib, position.as_dict(), tokenizer,
                                               dense if position.kind == "confidence" else None, device)
    stats["seconds"] = round(time.perf_counter() - start, 3)
    return calib, stats


def tensors_digest(calib: CalibrationSet) -> str:
    """sha256 of a calibration set's tensors (what a Hessian computed from it depends on)."""
    h = hashlib.sha256()
    for t in (calib.input_ids, calib.offsets, calib.token_weight, calib.token_kind):
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def round_base_key(base: str, round_index: int, calib: CalibrationSet) -> str:
    """Hessian base key of a closed-loop round: the run's base key, the round and its calibration tokens."""
    return json_digest(("closed-loop", base, round_index, tensors_digest(calib)))
