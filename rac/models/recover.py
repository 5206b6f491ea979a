"""Mask-preserving distillation loop of the recover stage: traces, batches, logits and the AdamW loop.

The student (pruned model) is trained towards the teacher (dense model) with the forward token-level
KL of ``rac.algorithms.distill`` on the dense model's own rollouts. Only ``trainable`` parameters get
gradients; their pruned zeros stay zero (gradients masked, weights re-masked after every step).

Memory: with ``top_k`` None the teacher runs next to the student and its logits are streamed per
batch (both models in memory: fine for 135M-1.5B). For 7B+ use ``top_k`` (e.g. 64): the teacher runs
once over all traces, only its top-k log-probs per loss token are kept (N_tokens * k * 12 bytes on the
host), and the caller frees the teacher before training; the student then needs its weights, the
gradients and two AdamW moments of the trainable weights (~4x the weights in float32; bf16 weights
with a float32 optimizer in a larger build), plus activations of ``batch_size`` x ``max_seq_len``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from rac.algorithms.distill import (
    TeacherTargets,
    apply_masks,
    count_revived,
    mask_gradients,
    teacher_targets,
    token_kl,
    zero_masks,
)


@dataclass(frozen=True)
class Trace:
    """One rollout as token ids: the first ``n_prompt`` are the prompt, the rest the completion."""

    ids: tuple[int, ...]
    n_prompt: int
    key: int = 0  # index of the trace in the full list (precomputed teacher targets are stored by it)


@dataclass
class Batch:
    """Right-padded ids [B, L], attention mask [B, L] and ``loss_at`` [B, L]: True at positions whose
    next token is a loss token (the logits there predict it)."""

    input_ids: Tensor
    attention_mask: Tensor
    loss_at: Tensor
    rows: tuple[int, ...] = ()  # the traces' keys, one per row

    @property
    def tokens(self) -> int:
        return int(self.loss_at.sum())

    def to(self, device: str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.loss_at.to(device), self.rows)


@dataclass(frozen=True)
class DistillConfig:
    """What the loop needs from ``recover`` settings."""

    tokens: int
    lr: float
    batch_size: int
    weight_decay: float
    temperature: float
    top_k: int | None
    loss_on_prompt: bool
    seed: int


@dataclass
class DistillResult:
    tokens_trained: int
    steps: int
    epochs: int
    kl_initial: float
    kl_final: float
    heldout_tokens: int
    revived: int
    seconds_train: float
    curve: list[tuple[int, int, float]] = field(default_factory=list)  # (step, tokens so far, train KL)


def make_batch(traces: list[Trace], loss_on_prompt: bool, pad_id: int = 0) -> Batch:
    """A right-padded batch; loss on completion tokens (all but the first token if ``loss_on_prompt``)."""
    width = max(len(t.ids) for t in traces)
    ids = torch.full((len(traces), width), pad_id, dtype=torch.long)
    attention = torch.zeros(len(traces), width, dtype=torch.long)
    loss_at = torch.zeros(len(traces), width, dtype=torch.bool)
    for row, trace in enumerate(traces):
        n = len(trace.ids)
        ids[row, :n] = torch.tensor(trace.ids, dtype=torch.long)
        attention[row, :n] = 1
        first_target = 1 if loss_on_prompt else max(trace.n_prompt, 1)
        loss_at[row, first_target - 1:n - 1] = True  # logits at t predict token t + 1
    return Batch(ids, attention, loss_at, tuple(t.key for t in traces))


def trim_batch(batch: Batch, keep: int) -> Batch:
    """The batch with only its first ``keep`` loss positions (row-major) still in the loss."""
    flat = batch.loss_at.flatten().clone()
    positions = flat.nonzero().flatten()
    flat[positions[keep:]] = False
    return Batch(batch.input_ids, batch.attention_mask, flat.view_as(batch.loss_at), batch.rows)


def loss_logits(model: Any, batch: Batch) -> Tensor:
    """Logits [N, V] at the batch's loss positions only (the LM head runs on those hidden states alone)."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if decoder is None or head is None:
        return model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[batch.loss_at]
    hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state
    return head(hidden[batch.loss_at])


def batches(traces: list[Trace], size: int, loss_on_prompt: bool, pad_id: int) -> list[Batch]:
    """Consecutive batches of ``size`` traces."""
    return [make_batch(traces[i:i + size], loss_on_prompt, pad_id) for i in range(0, len(traces), size)]


TeacherFn = Callable[[Batch], TeacherTargets]


def streamed_teacher(teacher: nn.Module, temperature: float, top_k: int | None) -> TeacherFn:
    """Teacher targets computed on the fly for each batch (the teacher stays in memory)."""
    @torch.no_grad()
    def targets(batch: Batch) -> TeacherTargets:
        return teacher_targets(loss_logits(teacher, batch), temperature, top_k)
    return targets


@torch.no_grad()
def mean_kl(student: nn.Module, teacher: TeacherFn, held: list[Batch], temperature: float, device: str) -> tuple[float, int]:
    """Mean per-token KL(teacher || student) over the held-out batches, and their token count."""
    total, count = 0.0, 0
    for batch in held:
        batch = batch.to(device)
        kl = token_kl(teacher(batch).to(device), loss_logits(student, batch), temperature)
        total, count = total + float(kl.sum()), count + kl.numel()
    return (total / count if count else float("nan")), count


def _epochs(train: list[Trace], cfg: DistillConfig, pad_id: int) -> Iterator[tuple[int, Batch]]:
    """(epoch, batch) forever: the training traces reshuffled (seeded) every epoch."""
    rng = random.Random(cfg.seed)
    epoch = 0
    while True:
        order = list(train)
        rng.shuffle(order)
        epoch += 1
        for batch in batches(order, cfg.batch_size, cfg.loss_on_prompt, pad_id):
            yield epoch, batch


def distill(student: nn.Module, teacher: TeacherFn, trainable: dict[str, nn.Parameter], train: list[Trace],
            held: list[Trace], cfg: DistillConfig, device: str, pad_id: int = 0,
            on_step: Callable[[int], None] | None = None) -> DistillResult:
    """Train ``trainable`` (every other student parameter frozen) until ``cfg.tokens`` loss tokens are used.

    The last batch is trimmed so the budget is never exceeded; pruned zeros stay zero."""
    for p in student.parameters():
        p.requires_grad_(False)
    for p in trainable.values():
        p.requires_grad_(True)
    masks = zero_masks(dict(trainable))
    held_batches = batches(held, cfg.batch_size, cfg.loss_on_prompt, pad_id)
    kl_initial, held_tokens = mean_kl(student, teacher, held_batches, cfg.temperature, device)
    optimizer = torch.optim.AdamW(list(trainable.values()), lr=cfg.lr, weight_decay=cfg.weight_decay)
    used, steps, epochs, curve = 0, 0, 0, []
    t0 = time.perf_counter()
    usable = [t for t in train if (len(t.ids) - (1 if cfg.loss_on_prompt else max(t.n_prompt, 1))) > 0]
    stream = _epochs(usable, cfg, pad_id) if usable else iter(())
    for epoch, batch in stream:
        if used >= cfg.tokens:
            break
        if batch.tokens > cfg.tokens - used:
            batch = trim_batch(batch, cfg.tokens - used)
        batch = batch.to(device)
        targets = teacher(batch).to(device)
        kl = token_kl(targets, loss_logits(student, batch), cfg.temperature).mean()
        optimizer.zero_grad(set_to_none=True)
        kl.backward()
        mask_gradients(dict(trainable), masks)
        optimizer.step()
        apply_masks(dict(trainable), masks)
        used, steps = used + batch.tokens, steps + 1
        epochs = epoch
        curve.append((steps, used, float(kl.detach())))
        if on_step is not None:
            on_step(batch.tokens)
    seconds = time.perf_counter() - t0
    for p in trainable.values():
        p.requires_grad_(False)
    kl_final, _ = mean_kl(student, teacher, held_batches, cfg.temperature, device)
    return DistillResult(used, steps, epochs, kl_initial, kl_final, held_tokens,
                         count_revived(dict(trainable), masks), seconds, curve)


def precomputed_teacher(teacher: nn.Module, traces: list[Trace], temperature: float, top_k: int, batch_size: int,
                        loss_on_prompt: bool, device: str, pad_id: int = 0) -> TeacherFn:
    """Top-k targets of every trace computed once and kept on the host (the caller may free the teacher).

    A batch's targets are its rows' targets concatenated in row order, cut to its loss positions (a
    trimmed batch keeps its first positions, row-major, so the cut matches)."""
    table: dict[int, TeacherTargets] = {}
    with torch.no_grad():
        for batch in batches(traces, batch_size, loss_on_prompt, pad_id):
            found = teacher_targets(loss_logits(teacher, batch.to(device)), temperature, top_k).to("cpu")
            assert found.index is not None
            start = 0
            for key, n in zip(batch.rows, batch.loss_at.sum(1).tolist(), strict=True):
                table[key] = TeacherTargets(found.logp[start:start + n], found.index[start:start + n])
                start += n

    def targets(batch: Batch) -> TeacherTargets:
        parts = [table[key] for key in batch.rows]
        n = batch.tokens
        index = torch.cat([p.index for p in parts if p.index is not None])[:n]
        return TeacherTargets(torch.cat([p.logp for p in parts])[:n], index)
    return targets


def trainable_parameters(model: nn.Module, changed: list[str], which: str) -> dict[str, nn.Parameter]:
    """State-dict name -> parameter to train: the weights the prune stage changed (``pruned``) or every
    linear weight of the decoder blocks plus those (``linear``)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    names = [n for n in changed if n in params]
    if which == "linear":
        from rac.models.blocks import find_blocks, linear_modules

        prefix, blocks = find_blocks(model)
        for i, block in enumerate(blocks):
            for info in linear_modules(block).values():
                name = f"{prefix}.{i}.{info.qualified}.weight"
                if name in params and name not in names:
                    names.append(name)
    seen: set[int] = set()
    out: dict[str, nn.Parameter] = {}
    for name in names:  # tied parameters train once
        if id(params[name]) not in seen:
            seen.add(id(params[name]))
            out[name] = params[name]
    return out


def traces_of(rollouts: Any, max_seq_len: int) -> list[Trace]:
    """The kept rollouts of a ``RolloutSet`` as traces (prompt + completion, cut at ``max_seq_len``)."""
    out: list[Trace] = []
    for k in rollouts.kept():
        prompt = list(rollouts.prompt_of(k))
        ids = (prompt + list(rollouts.completion_ids[k]))[:max_seq_len]
        out.append(Trace(tuple(ids), min(len(prompt), len(ids)), len(out)))
    return out
