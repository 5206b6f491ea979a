"""Decode-fidelity probe (paper Section 5.1, Figure 2).

For each held-out problem the DENSE model's greedy rollout (at most ``t_max`` tokens, up to and
including EOS) is appended to the prompt; this fixed sequence is teacher-forced through the dense
and the compressed model. Per token position t (0-based over prompt + rollout):

- ``abs_error[t] = ||h_c[t] - h_d[t]||_2`` with ``h`` the last-layer hidden state after the final
  norm (``output_hidden_states[-1]``), ``rel_error[t] = abs_error[t] / ||h_d[t]||_2``;
- ``nll[t] = -log p_c(z_t | z_<t)`` of the dense sequence's token under the compressed model
  (``nll[0] = 0``: the first token has no prediction and is excluded from the means).

Prompt positions are ``t < prompt_len``, decode positions ``t >= prompt_len``. The dense part
(rollouts, hidden states, dense NLL) is computed once by :func:`dense_reference` and can be cached.

Termination probe (length, issue 18): where the dense rollout ends (its EOS token, and the first
end-of-reasoning token ``</think>`` when the tokenizer has it as one token), the compressed model's
teacher-forced probability of that same token there, and its rank among all tokens (0 = the
compressed model's greedy choice): a pruned model that rambles puts little mass on ending where the
dense model ends. Positions are flat indices into ``input_ids`` (``-1``: the dense rollout has no such
token, e.g. cut by ``t_max``).
"""

from __future__ import annotations

import torch

_LOGIT_CHUNK = 1024
REASONING_END_TOKEN = "</think>"
END_MARKERS = ("eos", "reasoning_end")


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def greedy_rollouts(model, tokenizer, prompts: list[list[int]], t_max: int, batch_size: int = 8) -> list[list[int]]:
    """Greedy completions (token ids, cut after the first EOS) of ``prompts``, left-padded batches."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    device = _device(model)
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start:start + batch_size]
        width = max(len(p) for p in batch)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in batch], device=device)
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch], device=device)
        gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=t_max,
                             min_new_tokens=1, pad_token_id=pad, eos_token_id=eos, num_beams=1)
        for row in gen[:, width:].tolist():
            if eos is not None and eos in row:
                row = row[:row.index(eos) + 1]
            out.append(row)
    return out


@torch.no_grad()
def token_states(model, ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(final-norm hidden states [T, H] float32, NLL of each token given its prefix [T], nll[0]=0)."""
    inputs = torch.tensor([ids], device=_device(model))
    output = model(input_ids=inputs, output_hidden_states=True, logits_to_keep=1)
    hidden = output.hidden_states[-1][0]
    head = model.get_output_embeddings()
    nll = torch.zeros(len(ids), dtype=torch.float32)
    targets = inputs[0, 1:]
    for lo in range(0, len(ids) - 1, _LOGIT_CHUNK):
        hi = min(lo + _LOGIT_CHUNK, len(ids) - 1)
        logp = torch.log_softmax(head(hidden[lo:hi]).float(), dim=-1)
        nll[lo + 1:hi + 1] = -logp.gather(-1, targets[lo:hi, None])[:, 0].cpu()
    return hidden.float().cpu(), nll


def dense_reference(dense, tokenizer, prompts: list[list[int]], t_max: int, batch_size: int = 8) -> dict[str, torch.Tensor]:
    """Rollouts and dense per-token states, flat with offsets (the cacheable half of the probe)."""
    if not prompts:
        raise ValueError("probe needs at least one prompt")
    rollouts = greedy_rollouts(dense, tokenizer, prompts, t_max, batch_size)
    ids, hidden, nll, offsets = [], [], [], [0]
    ends: dict[str, list[int]] = {name: [] for name in END_MARKERS}
    marker_ids = {"eos": tokenizer.eos_token_id, "reasoning_end": _single_token(tokenizer, REASONING_END_TOKEN)}
    for prompt, rollout in zip(prompts, rollouts):
        seq = list(prompt) + rollout
        for name in END_MARKERS:
            ends[name].append(_end_position(rollout, marker_ids[name], offsets[-1] + len(prompt), name == "eos"))
        h, n = token_states(dense, seq)
        ids.append(torch.tensor(seq, dtype=torch.int64))
        hidden.append(h)
        nll.append(n)
        offsets.append(offsets[-1] + len(seq))
    return {
        "input_ids": torch.cat(ids),
        "offsets": torch.tensor(offsets, dtype=torch.int64),
        "prompt_len": torch.tensor([len(p) for p in prompts], dtype=torch.int64),
        "hidden": torch.cat(hidden),
        "dense_nll": torch.cat(nll),
        **{f"{name}_pos": torch.tensor(ends[name], dtype=torch.int64) for name in END_MARKERS},
    }


def _single_token(tokenizer, text: str) -> int | None:
    """The id of ``text`` when the tokenizer has it as exactly one token, else None."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return ids[0] if len(ids) == 1 else None


def _end_position(rollout: list[int], token: int | None, start: int, last_only: bool) -> int:
    """Flat index of ``token`` in ``rollout`` (which begins at ``start``): the final token for EOS
    (``last_only``), else its first occurrence; -1 when absent."""
    if token is None or not rollout:
        return -1
    if last_only:
        return start + len(rollout) - 1 if rollout[-1] == token else -1
    return start + rollout.index(token) if token in rollout else -1


@torch.no_grad()
def _prob_and_rank(model, hidden: torch.Tensor, token: int) -> tuple[float, int]:
    """Probability of ``token`` from a final-norm hidden state, and how many tokens score higher."""
    head = model.get_output_embeddings()
    weight = next(head.parameters())
    logits = head(hidden.to(weight.device, weight.dtype)[None])[0].float()
    return float(torch.softmax(logits, -1)[token]), int((logits > logits[token]).sum())


def compare(compressed, reference: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-token errors and NLL of ``compressed`` on the reference sequences (flat, same offsets)."""
    offsets = reference["offsets"].tolist()
    abs_err, rel_err, nll = [], [], []
    count = len(offsets) - 1
    end_prob = {name: torch.full((count,), float("nan")) for name in END_MARKERS}
    end_rank = {name: torch.full((count,), -1, dtype=torch.int64) for name in END_MARKERS}
    for i in range(count):
        lo, hi = offsets[i], offsets[i + 1]
        h_c, n_c = token_states(compressed, reference["input_ids"][lo:hi].tolist())
        for name in END_MARKERS:
            pos = int(reference[f"{name}_pos"][i])
            if pos > lo:  # predicted from the state one position earlier
                prob, rank = _prob_and_rank(compressed, h_c[pos - lo - 1], int(reference["input_ids"][pos]))
                end_prob[name][i], end_rank[name][i] = prob, rank
        h_d = reference["hidden"][lo:hi]
        err = torch.linalg.vector_norm(h_c - h_d, dim=-1)
        abs_err.append(err)
        rel_err.append(err / torch.linalg.vector_norm(h_d, dim=-1).clamp_min(1e-12))
        nll.append(n_c)
    return {
        "abs_error": torch.cat(abs_err),
        "rel_error": torch.cat(rel_err),
        "nll": torch.cat(nll),
        "dense_nll": reference["dense_nll"],
        "offsets": reference["offsets"],
        "prompt_len": reference["prompt_len"],
        **{f"{name}_pos": reference[f"{name}_pos"] for name in END_MARKERS},
        **{f"{name}_prob_at_dense_end": end_prob[name] for name in END_MARKERS},
        **{f"{name}_rank_at_dense_end": end_rank[name] for name in END_MARKERS},
    }


def _masks(arrays: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    offsets, prompt_len = arrays["offsets"].tolist(), arrays["prompt_len"].tolist()
    total = offsets[-1]
    prompt = torch.zeros(total, dtype=torch.bool)
    first = torch.zeros(total, dtype=torch.bool)
    for i, plen in enumerate(prompt_len):
        prompt[offsets[i]:offsets[i] + plen] = True
        first[offsets[i]] = True
    return prompt, ~prompt, first


def _mean(values: torch.Tensor, mask: torch.Tensor) -> float | None:
    return float(values[mask].double().mean()) if bool(mask.any()) else None


def summarize_probe(arrays: dict[str, torch.Tensor], t_max: int) -> dict:
    """Mean errors and NLL on prompt and decode positions (the probe task's metrics)."""
    prompt, decode, first = _masks(arrays)
    scored = ~first
    lengths = (arrays["offsets"][1:] - arrays["offsets"][:-1]) - arrays["prompt_len"]
    return {
        "n_problems": int(arrays["prompt_len"].numel()),
        "t_max": t_max,
        "mean_decode_length": float(lengths.double().mean()),
        "prompt_error": _mean(arrays["abs_error"], prompt),
        "decode_error": _mean(arrays["abs_error"], decode),
        "prompt_rel_error": _mean(arrays["rel_error"], prompt),
        "decode_rel_error": _mean(arrays["rel_error"], decode),
        "prompt_nll": _mean(arrays["nll"], prompt & scored),
        "decode_nll": _mean(arrays["nll"], decode),
        "dense_prompt_nll": _mean(arrays["dense_nll"], prompt & scored),
        "dense_decode_nll": _mean(arrays["dense_nll"], decode),
        **termination_summary(arrays),
    }


def termination_summary(arrays: dict[str, torch.Tensor]) -> dict:
    """Per end marker (``eos``, ``reasoning_end``): how many dense rollouts end with it
    (``n_dense_<m>``), the compressed model's mean probability of it there
    (``<m>_prob_at_dense_end``), the dense model's own (``dense_<m>_prob_at_dense_end``), the mean
    rank (``<m>_rank_at_dense_end``, 0 = top) and the share where it is the top token
    (``<m>_top1_at_dense_end``); None when no dense rollout has the marker."""
    out: dict = {}
    for name in END_MARKERS:
        pos = arrays[f"{name}_pos"]
        ended = pos >= 0
        n = int(ended.sum())
        prob, rank = arrays[f"{name}_prob_at_dense_end"][ended], arrays[f"{name}_rank_at_dense_end"][ended]
        dense = torch.exp(-arrays["dense_nll"][pos[ended]]) if n else None
        out.update({
            f"n_dense_{name}": n,
            f"{name}_prob_at_dense_end": float(prob.double().mean()) if n else None,
            f"dense_{name}_prob_at_dense_end": float(dense.double().mean()) if dense is not None else None,
            f"{name}_rank_at_dense_end": float(rank.double().mean()) if n else None,
            f"{name}_top1_at_dense_end": float((rank == 0).double().mean()) if n else None,
        })
    return out


def probe(dense, compressed, tokenizer, prompts: list[list[int]], t_max: int) -> tuple[dict, dict[str, torch.Tensor]]:
    """(summary metrics, per-token arrays) of ``compressed`` against ``dense`` on ``prompts``."""
    arrays = compare(compressed, dense_reference(dense, tokenizer, prompts, t_max))
    return summarize_probe(arrays, t_max), arrays


def error_ratio(numerator: dict[str, torch.Tensor], denominator: dict[str, torch.Tensor],
                eps: float = 1e-12) -> dict[str, torch.Tensor]:
    """Paper Figure 2's matrix: per problem (row) and token index (column) the ratio
    ``abs_error(numerator) / abs_error(denominator)`` (e.g. prompt-only over RAC; > 1 = the denominator's
    model is closer to dense), NaN past each sequence's end, with each row's prompt/decode boundary.

    Both arrays must come from the same dense reference (same sequences), as the probe's cache ensures
    for cells of one grid; otherwise the columns would not be the same tokens.
    """
    for key in ("offsets", "prompt_len"):
        if not torch.equal(numerator[key], denominator[key]):
            raise ValueError(f"probe arrays differ in {key}: they were not computed on the same dense rollouts")
    offsets = numerator["offsets"].tolist()
    lengths = [hi - lo for lo, hi in zip(offsets[:-1], offsets[1:])]
    ratio = torch.full((len(lengths), max(lengths, default=0)), float("nan"), dtype=torch.float32)
    num, den = numerator["abs_error"].float(), denominator["abs_error"].float()
    for row, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:])):
        ratio[row, :hi - lo] = num[lo:hi] / den[lo:hi].clamp_min(eps)
    return {"ratio": ratio, "prompt_len": numerator["prompt_len"].clone(),
            "length": torch.tensor(lengths, dtype=torch.int64)}
