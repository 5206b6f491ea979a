"""Calibration sets: generic text, prompt-only, or prompt + on-policy CoT (RAC), mixed by weight.

Budget rules (``calibration.budget``: ``tokens`` and/or ``prompts``; when both are set both limits
apply; each source gets ``weight / sum(weights)`` of each limit):
- ``text`` packs full ``text_seq_len`` sequences: ``tokens // text_seq_len`` (at least one) and at
  most ``prompts`` of them.
- ``prompt`` and ``rac`` add whole prompts / whole traces (prompt + completion) in the source's seeded
  (rac: artifact) order until the next one would exceed the token share or start prompt number
  ``prompts + 1``. The trace that would overflow the token share is dropped (``dropped_budget``), never
  cut, and the source stops there; a source with a non-zero share contributes at least one item.
  With ``samples_per_prompt > 1`` the prompt limit counts prompts, each with all its kept traces.
Prompts longer than ``max_prompt_tokens`` are skipped (a chat prompt cut short is not a prompt).
On-policy traces are used token for token; off-policy traces (``provenance.on_policy`` false) are
re-rendered and re-tokenized with the target tokenizer.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rac.calibration.datasets import DatasetError
from rac.calibration.render import render_prompt
from rac.calibration.rollouts import read_rollouts
from rac.calibration.sources import Share, budget_of, source_items, source_label, source_shares

KIND_PROMPT, KIND_DECODE, KIND_TEXT = 0, 1, 2
CALIB_TENSORS, CALIB_JSON = "calibration.safetensors", "calibration.json"


@dataclass
class CalibrationSet:
    """Variable-length sequences stored flat (no pads): sequence i is ``[offsets[i], offsets[i+1])``."""

    input_ids: torch.Tensor  # int32 [N]
    offsets: torch.Tensor  # int64 [S + 1]
    token_weight: torch.Tensor  # float32 [N]
    token_kind: torch.Tensor  # int8 [N]: 0 prompt, 1 decode, 2 text
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.offsets.numel()) - 1

    def lengths(self) -> list[int]:
        return (self.offsets[1:] - self.offsets[:-1]).tolist()

    def sequence(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(input_ids, token_weight, token_kind) of sequence ``i``."""
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.input_ids[a:b], self.token_weight[a:b], self.token_kind[a:b]

    def save(self, out_dir: Path) -> None:
        """``calibration.safetensors`` (the four tensors) + ``calibration.json`` (stats)."""
        from safetensors.torch import save_file

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        tensors = {"input_ids": self.input_ids, "offsets": self.offsets,
                   "token_weight": self.token_weight, "token_kind": self.token_kind}
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / CALIB_TENSORS))
        (out_dir / CALIB_JSON).write_text(json.dumps(self.stats, indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, in_dir: Path) -> CalibrationSet:
        from safetensors.torch import load_file

        in_dir = Path(in_dir)
        if not (in_dir / CALIB_TENSORS).is_file():
            raise DatasetError(f"no calibration set in {in_dir} (missing {CALIB_TENSORS})")
        t = load_file(str(in_dir / CALIB_TENSORS))
        stats = json.loads((in_dir / CALIB_JSON).read_text()) if (in_dir / CALIB_JSON).is_file() else {}
        return cls(t["input_ids"], t["offsets"], t["token_weight"], t["token_kind"], stats)


class _Builder:
    """Accumulates sequences of (prompt-or-text part, decode part) with per-token weights."""

    def __init__(self, w_prompt: float, w_decode: float) -> None:
        self.w = {KIND_PROMPT: w_prompt, KIND_DECODE: w_decode, KIND_TEXT: w_prompt}
        self.ids: list[int] = []
        self.kinds: list[int] = []
        self.offsets = [0]
        self.counts = {"prompt_tokens": 0, "decode_tokens": 0, "text_tokens": 0}

    def add(self, first: list[int], first_kind: int, decode: Sequence[int] = ()) -> None:
        self.ids += list(first) + list(decode)
        self.kinds += [first_kind] * len(first) + [KIND_DECODE] * len(decode)
        self.offsets.append(len(self.ids))
        self.counts["text_tokens" if first_kind == KIND_TEXT else "prompt_tokens"] += len(first)
        self.counts["decode_tokens"] += len(decode)

    def build(self, stats: dict) -> CalibrationSet:
        kinds = torch.tensor(self.kinds, dtype=torch.int8)
        weights = torch.tensor([self.w[k] for k in self.kinds], dtype=torch.float32)
        stats = {**stats, **self.counts, "sequences": len(self.offsets) - 1, "total_tokens": len(self.ids)}
        return CalibrationSet(torch.tensor(self.ids, dtype=torch.int32),
                              torch.tensor(self.offsets, dtype=torch.int64), weights, kinds, stats)


def _weights(calib_cfg: dict) -> tuple[float, float]:
    cfg = calib_cfg.get("weights") or {}
    w_prompt, w_decode = float(cfg.get("prompt", 1.0)), float(cfg.get("decode", 1.0))
    if w_prompt < 0 or w_decode < 0 or w_prompt + w_decode == 0:
        raise DatasetError(f"calibration.weights must be >= 0 and not both 0, got prompt={w_prompt}, decode={w_decode}")
    return w_prompt, w_decode


def _add_text(builder: _Builder, items: list, tokenizer: Any, share: Share, seq_len: int) -> dict:
    """Tokenize documents (EOS between them) and pack them into full ``seq_len`` sequences."""
    limits = [share.prompts] if share.prompts is not None else []
    limits += [max(1, share.tokens // seq_len)] if share.tokens is not None else []
    wanted = min(limits)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    stream: list[int] = []
    docs = 0
    for item in items:
        if len(stream) >= wanted * seq_len:
            break
        stream += tokenizer(item.text, add_special_tokens=False)["input_ids"] + eos
        docs += 1
    made = min(wanted, len(stream) // seq_len)
    for k in range(made):
        builder.add(stream[k * seq_len : (k + 1) * seq_len], KIND_TEXT)
    return {"documents": docs, "sequences": made, "tokens": made * seq_len, "exhausted": made < wanted}


def _full(share: Share, taken_prompts: int, used: int, size: int, new_prompt: bool) -> bool:
    """True when adding an item of ``size`` tokens (a new prompt or not) would break a limit."""
    if share.prompts is not None and new_prompt and taken_prompts >= share.prompts:
        return True
    return share.tokens is not None and used > 0 and used + size > share.tokens


def _add_prompts(builder: _Builder, items: list, tokenizer: Any, share: Share, calib_cfg: dict) -> dict:
    """Rendered prompts only, whole, in the source's seeded order until the share is reached."""
    limit, used, taken, skipped = calib_cfg.get("max_prompt_tokens"), 0, 0, 0
    full = False
    for item in items:
        ids = render_prompt(tokenizer, item.text, calib_cfg.get("render") or {})
        if limit and len(ids) > limit:
            skipped += 1
            continue
        full = _full(share, taken, used, len(ids), True)
        if full:
            break
        builder.add(ids, KIND_PROMPT)
        used, taken = used + len(ids), taken + 1
    return {"prompts": taken, "tokens": used, "skipped_long_prompts": skipped, "exhausted": not full}


def _traces(rollout_dir: Path, tokenizer: Any, calib_cfg: dict) -> tuple[dict[int, list], dict]:
    """Kept traces per source index as (prompt_index, prompt ids, completion ids), plus drop counts."""
    rollouts = read_rollouts(rollout_dir)
    on_policy = rollouts.provenance.get("on_policy", True)
    render_cfg = calib_cfg.get("render") or {}
    eos = tokenizer.eos_token_id
    per_source: dict[int, list] = {}
    for k in rollouts.kept():
        record = rollouts.records[k]
        if on_policy:
            prompt, completion = rollouts.prompt_of(k), rollouts.completion_ids[k]
        else:  # off-policy: the source model's text, re-tokenized for the target model
            prompt = render_prompt(tokenizer, record["problem"], render_cfg)
            completion = tokenizer(record["text"], add_special_tokens=False)["input_ids"]
            completion += [eos] if record["finish_reason"] == "stop" and eos is not None else []
        first = on_policy and not per_source and "problem" in record
        if first and render_prompt(tokenizer, record["problem"], render_cfg) != prompt:
            raise DatasetError(
                f"rollouts in {rollout_dir} were rendered with another tokenizer or render config than "
                "the target model; set calibration.rollout.model to treat them as off-policy"
            )
        per_source.setdefault(int(record.get("source", 0)), []).append((record["prompt_index"], prompt, completion))
    dropped: dict[str, int] = {}
    for record in rollouts.records:
        if record.get("dropped"):
            key = f"dropped_{record['dropped']}"
            dropped[key] = dropped.get(key, 0) + 1
    return per_source, {"on_policy": on_policy, "rollouts_total": len(rollouts.records), **dropped}


def _add_traces(builder: _Builder, traces: list, share: Share) -> dict:
    """Whole traces (prompt + completion) in artifact order until the share is reached."""
    used, taken, over = 0, 0, 0
    prompts: set[int] = set()
    for index, prompt, completion in traces:
        size = len(prompt) + len(completion)
        if _full(share, len(prompts), used, size, index not in prompts):
            # the whole trace that would break the limit is dropped, never cut into a window
            over = int(share.tokens is not None and used + size > share.tokens)
            break
        builder.add(prompt, KIND_PROMPT, completion)
        used, taken = used + size, taken + 1
        prompts.add(index)
    return {"prompts": len(prompts), "rollouts": taken, "tokens": used, "dropped_budget": over}


def build_calibration_set(calib_cfg: dict, tokenizer: Any, rollout_dir: Path | None = None,
                          seed: int | None = None) -> CalibrationSet:
    """The calibration set the recipe's ``calibration`` section asks for (see the module docstring)."""
    kind = calib_cfg.get("kind", "rac")
    if kind not in ("text", "prompt", "rac"):
        raise DatasetError(f"calibration.kind must be text | prompt | rac, got {kind!r}")
    seed = int(calib_cfg.get("seed", 0) if seed is None else seed)
    sources = calib_cfg.get("sources") or []
    tokens, prompts = budget_of(calib_cfg)
    shares = source_shares(calib_cfg)
    builder = _Builder(*_weights(calib_cfg))
    stats: dict[str, Any] = {"kind": kind, "budget": {"tokens": tokens, "prompts": prompts}, "seed": seed,
                             "weights": dict(zip(("prompt", "decode"), _weights(calib_cfg)))}
    if kind == "rac":
        if rollout_dir is None:
            raise DatasetError("calibration.kind rac needs the rollout artifact (rollout stage output)")
        traces, extra = _traces(Path(rollout_dir), tokenizer, calib_cfg)
        stats.update(extra)
    per_source = []
    for index, (source, share) in enumerate(zip(sources, shares)):
        if share.empty:
            realized = {"prompts": 0, "tokens": 0}
        elif kind == "rac":
            realized = _add_traces(builder, traces.get(index, []), share)
        else:
            items = source_items(source, index, seed)
            if kind == "text":
                realized = _add_text(builder, items, tokenizer, share, int(calib_cfg.get("text_seq_len", 512)))
            else:
                realized = _add_prompts(builder, items, tokenizer, share, calib_cfg)
        per_source.append({"source": source_label(source), "share": share.to_dict(), **realized})
    stats["sources"] = per_source
    stats["prompts"] = sum(s.get("prompts", 0) for s in per_source)
    for key in ("dropped_budget", "skipped_long_prompts"):
        stats[key] = sum(s.get(key, 0) for s in per_source)
    stats["rollouts_used"] = sum(s.get("rollouts", 0) for s in per_source)
    calib = builder.build(stats)
    if len(calib) == 0:
        raise DatasetError(f"calibration set is empty (kind {kind}, budget tokens={tokens}, "
                           f"prompts={prompts}); check sources/budget")
    return calib
