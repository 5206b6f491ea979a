"""Per-stage resource estimate of a resolved recipe: accelerator memory, cache disk, tokens to generate.

Pure arithmetic over the recipe and the model's shapes (``rac.models.facts.ModelFacts``), so ``rac
plan`` can say before a 10-hour run that it will not fit. Estimates are upper bounds where the
pipeline's realised sizes depend on data (rollout lengths): every rollout is assumed to run to
``t_max``. Formulas, with ``b`` = bytes of the model dtype:

* weights: parameters x b;  KV cache: 2 x blocks x kv_heads x head_dim x b per token.
* rollout: prompts x samples x t_max tokens to generate; memory = weights + KV of ``batch_size``
  sequences of ``max_prompt_tokens + t_max`` (per GPU: weights / tensor_parallel_size);
  disk = ids (int32) + text (about 4 bytes a token) of every prompt and completion.
* hessian: calibration.safetensors = tokens x (4 id + 4 weight + 1 kind) bytes, plus the Hessians
  it precomputes (block 0's first group in sequential mode, every block otherwise).
* prune: Hessians kept in the cache = per pruned block, sum over its input groups of
  in_features^2 x 4 bytes (``prune.keep_hessians``: ``all``, ``reusable`` = block 0 only, ``none``);
  pruned weights x b. Memory = one block + its Hessians + the solver's workspace (H^-1 and the
  float32 weight of the widest layer) + one replay batch.
* quantize: FP8 = 1 byte per quantized weight plus per-channel scales.
* evaluate: problems x max_new_tokens x samples per task (probe: problems x t_max; throughput:
  batch x decode_len x repeats). Memory = weights (twice for FP8) + KV of ``batch_size`` sequences.
* export: weights written to the run directory (not the cache).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
HESSIAN_BYTES = 4  # float32 accumulators
TEXT_BYTES_PER_TOKEN = 4  # rollouts.jsonl: roughly 4 characters of text per token
CALIB_BYTES_PER_TOKEN = 4 + 4 + 1  # input id (int32) + weight (float32) + kind (int8)
ASSUMED_PROMPT_TOKENS = 128  # mean rendered prompt length when only a token budget is given
GiB = 2**30


@dataclass(frozen=True)
class StageEstimate:
    """One stage's estimate; None = unknown (the note says why)."""

    stage: str
    memory: int | None = None  # peak accelerator bytes (per device)
    disk: int | None = None  # bytes written to the cache (export: to the run directory)
    tokens: int | None = None  # tokens to generate
    host_memory: int | None = None  # bytes of host memory the stage holds beyond the model
    notes: tuple[str, ...] = field(default_factory=tuple)


def dtype_bytes(recipe: dict, facts: Any = None) -> int:
    """Bytes per weight of the recipe's ``model.dtype`` (``auto``: the config's dtype, else 2)."""
    name = (recipe.get("model") or {}).get("dtype") or "float32"
    if name == "auto":
        name = str(getattr(facts, "config_dtype", None) or "bfloat16").replace("torch.", "")
    return DTYPE_BYTES.get(name, 2)


def _groups(facts: Any) -> dict[str, int]:
    """Input group -> in_features of one block."""
    out: dict[str, int] = {}
    for linear in facts.block_linears:
        out.setdefault(linear.input_key, linear.in_features)
    return out


def _block_params(facts: Any) -> int:
    return sum(lin.in_features * lin.out_features for lin in facts.block_linears)


def rollout_prompts(calibration: dict) -> tuple[int, bool]:
    """(prompts rolled out, exact?) for a rac calibration (the rollout stage's first round)."""
    budget = calibration.get("budget") or {}
    rollout = calibration.get("rollout") or {}
    samples = int(rollout.get("samples_per_prompt") or 1)
    t_max = int(rollout.get("t_max") or 256)
    by_tokens = None
    if budget.get("tokens") is not None:
        prompt_len = min(ASSUMED_PROMPT_TOKENS, int(calibration.get("max_prompt_tokens") or ASSUMED_PROMPT_TOKENS))
        by_tokens = math.ceil(int(budget["tokens"]) / (samples * (prompt_len + t_max / 2)))
    if budget.get("prompts") is not None:
        prompts = int(budget["prompts"])
        return (min(prompts, by_tokens), False) if by_tokens is not None else (prompts, True)
    return (by_tokens or 0), False


def _calibration_tokens(calibration: dict) -> int | None:
    budget = calibration.get("budget") or {}
    if budget.get("tokens") is not None:
        return int(budget["tokens"])
    if budget.get("prompts") is None:
        return None
    prompts = int(budget["prompts"])
    per = int(calibration.get("max_prompt_tokens") or ASSUMED_PROMPT_TOKENS)
    if calibration.get("kind") == "rac":
        rollout = calibration.get("rollout") or {}
        per += int(rollout.get("t_max") or 256) * int(rollout.get("samples_per_prompt") or 1)
    elif calibration.get("kind") == "text":
        per = int(calibration.get("text_seq_len") or 512)
    return prompts * per


def _seq_len(calibration: dict) -> int:
    if calibration.get("kind") == "text":
        return int(calibration.get("text_seq_len") or 512)
    length = int(calibration.get("max_prompt_tokens") or 512)
    if calibration.get("kind") == "rac":
        length += int((calibration.get("rollout") or {}).get("t_max") or 256)
    return length


def estimate_rollout(recipe: dict, facts: Any) -> StageEstimate:
    """Tokens, memory and disk of the rac rollout stage (``facts`` = the generating model's)."""
    calibration = recipe["calibration"]
    rollout = calibration.get("rollout") or {}
    samples = int(rollout.get("samples_per_prompt") or 1)
    t_max = int(rollout.get("t_max") or 256)
    prompts, exact = rollout_prompts(calibration)
    tokens = prompts * samples * t_max
    notes = [f"{prompts:,} prompts x {samples} sample(s) x t_max {t_max:,}"
             + ("" if exact else f" (prompts from the token budget, assuming {ASSUMED_PROMPT_TOKENS}-token prompts "
                                 "and completions of t_max/2; top-up rounds may add more)")]
    prompt_len = int(calibration.get("max_prompt_tokens") or 512)
    disk = prompts * samples * (prompt_len + t_max) * (4 + TEXT_BYTES_PER_TOKEN)
    if facts is None:
        return StageEstimate("rollout", None, disk, tokens, notes=tuple(notes))
    b = dtype_bytes({"model": rollout.get("model") or recipe.get("model")}, facts)
    batch = int(rollout.get("batch_size") or 16) * samples
    seq = prompt_len + t_max
    if rollout.get("engine") != "vllm":
        memory = facts.params * b + batch * seq * facts.kv_bytes_per_token(b)
        return StageEstimate("rollout", memory, disk, tokens, notes=tuple(notes))
    vllm = rollout.get("vllm") or {}
    memory, note = vllm_memory(facts, b, batch, min(seq, int(vllm.get("max_model_len") or seq)), vllm)
    return StageEstimate("rollout", memory, disk, tokens, notes=(*notes, note))


def vllm_memory(facts: Any, b: int, batch: int, seq: int, vllm: dict) -> tuple[int, str]:
    """(bytes per GPU vLLM needs at least: weights / TP + KV of one full-length sequence, a note).

    vLLM claims ``gpu_memory_utilization`` of each GPU whatever the model, and schedules as many
    sequences at once as the KV cache left over holds; the note says how much a full batch would take.
    """
    tp = int(vllm.get("tensor_parallel_size") or 1)
    per_token = facts.kv_bytes_per_token(b)
    minimum = (facts.params * b + seq * per_token) // tp
    full = (facts.params * b + batch * seq * per_token) // tp
    note = (f"vLLM claims gpu_memory_utilization={vllm.get('gpu_memory_utilization', 0.9)} of each GPU; it needs at "
            f"least {fmt_bytes(minimum)} (weights/TP {tp} + one {seq:,}-token sequence); all {batch} sequences "
            f"at full length at once would take {fmt_bytes(full)}")
    return minimum, note


def _pruned(recipe: dict, facts: Any) -> dict[tuple[int, str], Any]:
    from rac.recipe.scopes import assign_scopes

    return assign_scopes(recipe["prune"], facts.n_blocks)


def estimate_hessian(recipe: dict, facts: Any) -> StageEstimate:
    """The calibration set (and the Hessians precomputed from it)."""
    calibration = recipe["calibration"]
    tokens = _calibration_tokens(calibration)
    disk = tokens * CALIB_BYTES_PER_TOKEN if tokens is not None else None
    if facts is None:
        return StageEstimate("hessian", None, disk)
    prune = recipe.get("prune") or {}
    groups = _groups(facts)
    first = next(iter(groups.values()))
    if prune.get("sequential", True):
        hessians = first * first * HESSIAN_BYTES if prune.get("true_sequential", True) else \
            sum(n * n for n in groups.values()) * HESSIAN_BYTES
    else:
        hessians = facts.n_blocks * sum(n * n for n in groups.values()) * HESSIAN_BYTES
    b = dtype_bytes(recipe, facts)
    batch = int(prune.get("batch_size") or 8) * _seq_len(calibration)
    memory = _block_params(facts) * b + hessians + batch * facts.hidden_size * 4 * 2
    outside = sum(lin.in_features * lin.out_features for lin in facts.outside if lin.name == "embed_tokens")
    memory += outside * b
    host = (tokens or 0) * facts.hidden_size * b
    return StageEstimate("hessian", memory, (disk or 0) + hessians, None, host)


def stored_hessian_bytes(width: int, storage: str = "float32") -> int:
    """Bytes of one stored width x width Hessian (``prune.hessian_storage``: full or upper triangle)."""
    if storage == "float32":
        return width * width * HESSIAN_BYTES
    return width * (width + 1) // 2 * (2 if storage.startswith("bfloat16") else 4)


def estimate_prune(recipe: dict, facts: Any) -> StageEstimate:
    """Hessians kept in the cache, the pruned weights, and the per-block device peak."""
    if facts is None:
        return StageEstimate("prune", notes=("model shapes unknown",))
    assignment = _pruned(recipe, facts)
    shapes = {lin.name: lin for lin in facts.block_linears}
    b = dtype_bytes(recipe, facts)
    prune = recipe["prune"]
    keep = str(prune.get("keep_hessians") or "reusable")
    storage = str(prune.get("hessian_storage") or "float32")
    blocks: dict[int, set[str]] = {}
    weights = 0
    for (block, module), spec in assignment.items():
        if spec.sparsity <= 0 and spec.pattern is None:
            continue
        if block < 0:
            weights += next((lin.in_features * lin.out_features for lin in facts.outside if lin.name == module), 0) * b
            continue
        lin = shapes.get(module)
        if lin is None:
            continue
        weights += lin.in_features * lin.out_features * b
        if spec.method != "magnitude":
            blocks.setdefault(block, set()).add(lin.input_key)
    groups = _groups(facts)
    per_block = {i: sum(stored_hessian_bytes(groups[g], storage) for g in keys) for i, keys in blocks.items()}
    if not prune.get("sequential", True):  # dense inputs: every Hessian can serve another configuration
        reusable = sum(per_block.values())
    elif per_block and prune.get("true_sequential", True):  # only the first pruned group has a dense upstream
        first = min(per_block)
        key = next(g for g in groups if g in blocks[first])
        reusable = stored_hessian_bytes(groups[key], storage)
    else:
        reusable = per_block[min(per_block)] if per_block else 0
    kept = {"all": sum(per_block.values()), "reusable": reusable, "none": 0}.get(keep, sum(per_block.values()))
    notes = [f"Hessians: {len(per_block)} block(s) x {fmt_bytes(max(per_block.values(), default=0))} computed, "
             f"{fmt_bytes(kept)} kept in the cache (keep_hessians: {keep})"] if per_block else []
    widest = max(facts.block_linears, key=lambda lin: lin.in_features * (lin.in_features + lin.out_features))
    workspace = widest.in_features ** 2 * 4 * 2 + widest.in_features * widest.out_features * 4
    batch = int(prune.get("batch_size") or 8) * _seq_len(recipe["calibration"])
    widest_act = max(max(lin.in_features, lin.out_features) for lin in facts.block_linears)
    memory = _block_params(facts) * b + max(per_block.values(), default=0) + workspace + batch * widest_act * 4 * 2
    host = (_calibration_tokens(recipe["calibration"]) or 0) * facts.hidden_size * b * 2
    return StageEstimate("prune", memory, kept + weights, None, host, tuple(notes))


def estimate_recover(recipe: dict, facts: Any) -> StageEstimate:
    """Student + teacher (none on the device with top_k) + float32 grads and two AdamW moments of the
    block linear weights + the logits of one batch at the loss positions (both models, with backward)."""
    if facts is None:
        return StageEstimate("recover")
    recover, b = recipe["recover"], dtype_bytes(recipe, facts)
    linear = _block_params(facts) * facts.n_blocks
    models = facts.params * b * (1 if recover.get("top_k") else 2)
    logits = int(recover["batch_size"]) * int(recover["max_seq_len"]) * facts.vocab_size * 4 * 4
    note = f"{recover['tokens']:,} loss tokens" + (f", teacher top-{recover['top_k']} kept on the host"
                                                   if recover.get("top_k") else ", teacher logits streamed")
    return StageEstimate("recover", models + linear * 4 * 3 + logits, linear * b, None, None, (note,))


def estimate_quantize(recipe: dict, facts: Any) -> StageEstimate:
    if facts is None:
        return StageEstimate("quantize")
    b = dtype_bytes(recipe, facts)
    linear = _block_params(facts) * facts.n_blocks
    scales = sum(lin.out_features for lin in facts.block_linears) * facts.n_blocks * 4
    return StageEstimate("quantize", facts.params * b, linear + scales)


def _task_problems(task: dict, evaluate: dict, sizes: Mapping[str, int]) -> int | None:
    limit = task.get("limit") or evaluate.get("limit")
    size = sizes.get(str(task.get("dataset"))) if task.get("dataset") else None
    if limit is not None and size is not None:
        return min(int(limit), size)
    return int(limit) if limit is not None else size


def evaluate_tokens(recipe: dict, sizes: Mapping[str, int]) -> tuple[int | None, list[str]]:
    """Tokens to generate over all evaluation tasks, and one note per task whose count is unknown."""
    evaluate = recipe["evaluate"]
    total, notes = 0, []
    for task in evaluate.get("tasks") or []:
        kind = task.get("type")
        if kind == "throughput":
            total += int(task.get("batch_size", 16)) * int(task.get("decode_len", 128)) * int(task.get("repeats", 3))
            continue
        problems = _task_problems(task, evaluate, sizes)
        if kind == "lm_eval" or problems is None:
            notes.append(f"task {task.get('name')}: size unknown here (set limit to count it)")
            continue
        if kind == "probe":
            total += problems * int(task.get("t_max") or 256)
            continue
        budget = int(task.get("max_new_tokens") or evaluate.get("max_new_tokens") or 4096)
        samples = int(task.get("samples") or evaluate.get("samples") or 1)
        total += problems * budget * samples
    return total, notes


def estimate_evaluate(recipe: dict, facts: Any, sizes: Mapping[str, int]) -> StageEstimate:
    evaluate = recipe["evaluate"]
    tokens, notes = evaluate_tokens(recipe, sizes)
    if facts is None:
        return StageEstimate("evaluate", None, 0, tokens, notes=tuple(notes))
    b = dtype_bytes(recipe, facts)
    budget = int(evaluate.get("max_new_tokens") or 4096)
    seq = budget + int((recipe.get("calibration") or {}).get("max_prompt_tokens") or 512)
    copies = 2 if recipe.get("quantize") else 1
    batch = int(evaluate.get("batch_size") or 16)
    if evaluate.get("engine") == "vllm":  # the HF copy is freed before vLLM starts; FP8 is written from CPU
        vllm = evaluate.get("vllm") or {}
        memory, note = vllm_memory(facts, b, batch, min(seq, int(vllm.get("max_model_len") or seq)), vllm)
        return StageEstimate("evaluate", memory, 0, tokens, notes=(*notes, note))
    kv = batch * seq * facts.kv_bytes_per_token(b)
    return StageEstimate("evaluate", facts.params * b * copies + kv, 0, tokens, notes=tuple(notes))


def estimate_export(recipe: dict, facts: Any) -> StageEstimate:
    if facts is None:
        return StageEstimate("export")
    b = dtype_bytes(recipe, facts)
    if recipe.get("quantize"):
        linear = _block_params(facts) * facts.n_blocks
        size = linear + (facts.params - linear) * b
    else:
        size = facts.params * b
    return StageEstimate("export", 0, size, notes=("written to the run directory, not the cache",))


def estimate_stages(recipe: dict, stages: list[str], facts: Any, rollout_facts: Any = None,
                    dataset_sizes: Mapping[str, int] | None = None) -> list[StageEstimate]:
    """Estimates of the named (enabled) stages of a resolved recipe, in order.

    ``facts``: the target model's ModelFacts (None = unknown: memory and Hessian sizes stay None);
    ``rollout_facts``: the off-policy rollout model's (default: ``facts``); ``dataset_sizes``:
    records per builtin data set, for evaluation tasks without a limit.
    """
    sizes = dataset_sizes or {}
    out = []
    for name in stages:
        if name == "rollout":
            out.append(estimate_rollout(recipe, rollout_facts if rollout_facts is not None else facts))
        elif name == "hessian":
            out.append(estimate_hessian(recipe, facts))
        elif name == "prune":
            out.append(estimate_prune(recipe, facts))
        elif name == "recover":
            out.append(estimate_recover(recipe, facts))
        elif name == "quantize":
            out.append(estimate_quantize(recipe, facts))
        elif name == "evaluate":
            out.append(estimate_evaluate(recipe, facts, sizes))
        elif name == "export":
            out.append(estimate_export(recipe, facts))
        else:
            out.append(StageEstimate(name))
    return out


def fmt_bytes(n: int | None) -> str:
    """``1.4 GB``-style size (powers of 1000), ``?`` for unknown."""
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def fmt_count(n: int | None) -> str:
    """``1.9M``-style count, ``?`` for unknown, ``-`` for zero."""
    if n is None:
        return "?"
    if n == 0:
        return "-"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f}{unit}"
    return str(n)
