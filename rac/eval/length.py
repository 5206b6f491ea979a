"""Generation length as a first-class metric: how long, how often cut, how often ended, how loopy.

Pruned reasoning models ramble (paper Section 6): they generate longer traces, hit the token budget
more often and fall into repeated loops. These pure functions turn per-sample records (keys
``id``, ``length``, ``finish_reason``, and the per-sample fields added by :func:`sample_fields`)
into the ``length`` block of a math / code task's metrics, and pair two runs' records (a compressed
model and the dense one, same problems) into a length ratio.

Loop share: a token is inside a loop when it belongs to a stretch where one unit of ``p`` tokens
(``1 <= p <= max_period``) repeats back to back at least ``min_repeats`` times and the stretch is at
least ``min_span`` tokens long (so "..." or a double newline is not a loop). The share of a trace is
looped tokens / trace length; the task reports the mean share and the fraction of samples with any loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

MAX_PERIOD = 64
MIN_REPEATS = 3
MIN_SPAN = 16


def loop_mask(ids: Sequence[int], max_period: int = MAX_PERIOD, min_repeats: int = MIN_REPEATS,
              min_span: int = MIN_SPAN) -> list[bool]:
    """Per token: True when it lies in a back-to-back repetition of a unit of at most ``max_period``
    tokens, repeated at least ``min_repeats`` times over at least ``min_span`` tokens."""
    if max_period < 1 or min_repeats < 2 or min_span < 1:
        raise ValueError(f"loop_mask needs max_period >= 1, min_repeats >= 2, min_span >= 1 "
                         f"(got {max_period}, {min_repeats}, {min_span})")
    n = len(ids)
    mask = [False] * n
    for period in range(1, min(max_period, n // min_repeats) + 1):
        run = 0  # length of the current stretch where ids[i] == ids[i - period]
        for i in range(period, n + 1):
            if i < n and ids[i] == ids[i - period]:
                run += 1
                continue
            span = run + period  # the stretch covers the first unit and `run` repeated tokens
            if run and span >= period * min_repeats and span >= min_span:
                for j in range(i - span, i):
                    mask[j] = True
            run = 0
    return mask


def loop_share(ids: Sequence[int], **kwargs: int) -> float:
    """Share of ``ids`` inside repeated loops (see :func:`loop_mask`); 0.0 for an empty trace."""
    if not ids:
        return 0.0
    mask = loop_mask(ids, **kwargs)
    return sum(mask) / len(mask)


def sample_fields(completion_ids: Sequence[int], text: str, reasoning_marker: str | None) -> dict:
    """Per-sample length fields stored in the task records: ``loop_share`` and ``reasoning_ended``
    (the end-of-reasoning marker is in the text; None when the task has no marker)."""
    ended = None if reasoning_marker is None else reasoning_marker in (text or "")
    return {"loop_share": round(loop_share(list(completion_ids)), 6), "reasoning_ended": ended}


def _quantile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return 0.0
    return float(sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))])


def length_metrics(records: Sequence[dict], max_new_tokens: int | None) -> dict:
    """The ``length`` block of a generation task: mean / p90 tokens, budget-hit rate, EOS rate
    (finish reason "stop"), end-of-reasoning rate (None when no sample has a marker to look for),
    mean loop share and the fraction of samples with any loop."""
    n = len(records)
    lengths = sorted(int(r["length"]) for r in records)
    ended = [bool(r["reasoning_ended"]) for r in records if r.get("reasoning_ended") is not None]
    shares = [float(r.get("loop_share") or 0.0) for r in records]
    return {
        "mean_tokens": sum(lengths) / n if n else 0.0,
        "p90_tokens": _quantile(lengths, 0.9),
        "budget": max_new_tokens,
        "budget_hit_rate": sum(r["finish_reason"] == "length" for r in records) / n if n else 0.0,
        "eos_rate": sum(r["finish_reason"] == "stop" for r in records) / n if n else 0.0,
        "reasoning_end_rate": sum(ended) / len(ended) if ended else None,
        "loop_share": sum(shares) / n if n else 0.0,
        "looping_samples": sum(s > 0 for s in shares) / n if n else 0.0,
    }


def _mean_length_per_problem(records: Iterable[dict]) -> dict[str, float]:
    sums: dict[str, list[int]] = {}
    for record in records:
        sums.setdefault(str(record["id"]), []).append(int(record["length"]))
    return {pid: sum(v) / len(v) for pid, v in sums.items()}


def length_ratio(records: Iterable[dict], dense_records: Iterable[dict]) -> dict:
    """Length of a run relative to the dense run on the problems both evaluated (paired by id; each
    problem's length is the mean over its samples). ``ratio`` = sum of lengths / sum of dense lengths
    (the ratio of mean lengths over the paired problems); ``mean_problem_ratio`` averages per-problem
    ratios (problems where dense generated 0 tokens are left out of it). Raises when nothing pairs."""
    ours, dense = _mean_length_per_problem(records), _mean_length_per_problem(dense_records)
    paired = sorted(set(ours) & set(dense))
    if not paired:
        raise ValueError("length_ratio: the two runs share no problem id (different tasks, offsets or limits?)")
    total, dense_total = sum(ours[p] for p in paired), sum(dense[p] for p in paired)
    per_problem = [ours[p] / dense[p] for p in paired if dense[p] > 0]
    return {
        "n_paired": len(paired),
        "unpaired": len(set(ours) ^ set(dense)),
        "mean_tokens": total / len(paired),
        "dense_mean_tokens": dense_total / len(paired),
        "ratio": total / dense_total if dense_total else None,
        "mean_problem_ratio": sum(per_problem) / len(per_problem) if per_problem else None,
    }
