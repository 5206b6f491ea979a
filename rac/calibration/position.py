"""Per-position decode weights (``calibration.weights.position``): where in a trace the Hessian looks.

A length lever (issue 18): pruned models ramble because the decision to stop (the end-of-reasoning
marker, the answer, EOS) is a handful of tokens in a long trace, weighted like any other. On top of
today's prompt / decode weights, the decode tokens of each trace are re-weighted:

- ``uniform``: unchanged.
- ``tail``: the last ``tail_tokens`` decode tokens of each trace, and every decode token from the first
  end-of-reasoning ``marker`` on (the answer segment), weigh ``factor`` times the others.
- ``confidence``: decode token t weighs ``1 + factor * c_t`` with ``c_t`` the dense model's
  next-token confidence at t (its top probability); ``factor`` < 0 (down to -1) favours the
  uncertain positions instead.

The decode weights are then rescaled so their sum is unchanged: a lever redistributes weight inside
the traces and keeps today's prompt / decode balance. Prompt and text tokens are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rac.calibration.datasets import DatasetError
from rac.calibration.mix import KIND_DECODE, CalibrationSet

KINDS = ("uniform", "tail", "confidence")


def check_position(cfg: Mapping[str, Any], calib_kind: str) -> None:
    """Reject a position lever that cannot act: unknown kind, bad factor, no decode tokens."""
    kind = cfg.get("kind", "uniform")
    if kind not in KINDS:
        raise DatasetError(f"calibration.weights.position.kind: {kind!r} is not one of {', '.join(KINDS)}")
    factor = float(cfg.get("factor", 1.0))
    if kind == "tail" and factor < 0:
        raise DatasetError(f"calibration.weights.position.factor: must be >= 0 for kind tail, got {factor}")
    if kind == "confidence" and factor < -1:
        raise DatasetError(f"calibration.weights.position.factor: must be >= -1 for kind confidence, got {factor}")
    if kind == "tail" and int(cfg.get("tail_tokens", 0)) < 0:
        raise DatasetError("calibration.weights.position.tail_tokens: must be >= 0")
    if kind != "uniform" and calib_kind != "rac":
        raise DatasetError(f"calibration.weights.position.kind {kind!r} weighs decode tokens, but calibration.kind "
                           f"{calib_kind!r} has none; use kind rac or position.kind uniform")


def _find(seq: list[int], pattern: list[int]) -> int:
    """Index of the first occurrence of ``pattern`` in ``seq``; -1 when absent or empty."""
    if not pattern:
        return -1
    for i in range(len(seq) - len(pattern) + 1):
        if seq[i:i + len(pattern)] == pattern:
            return i
    return -1


def tail_multipliers(calib: CalibrationSet, tail_tokens: int, factor: float,
                     marker_ids: list[int] | None = None) -> torch.Tensor:
    """Per-token multipliers [N] of ``tail``: ``factor`` on each trace's last ``tail_tokens`` decode
    tokens and on its decode tokens from the first ``marker_ids`` occurrence on, 1 elsewhere."""
    mult = torch.ones(calib.input_ids.numel(), dtype=torch.float32)
    for i in range(len(calib)):
        lo = int(calib.offsets[i])
        ids, _, kinds = calib.sequence(i)
        decode = (kinds == KIND_DECODE).nonzero().flatten().tolist()
        if not decode:
            continue
        first = decode[0]
        start = max(first, decode[-1] + 1 - tail_tokens)
        at = _find(ids[first:].tolist(), marker_ids or [])
        if at >= 0:
            start = min(start, first + at)
        mult[lo + start:lo + decode[-1] + 1] = factor
    return mult


@torch.no_grad()
def dense_confidence(model: Any, calib: CalibrationSet, device: str = "cpu") -> torch.Tensor:
    """The dense model's top next-token probability at every calibration token [N] (one sequence at
    a time, the full sequence as context)."""
    out = torch.zeros(calib.input_ids.numel(), dtype=torch.float32)
    model.to(device)
    for i in range(len(calib)):
        lo, hi = int(calib.offsets[i]), int(calib.offsets[i + 1])
        ids = calib.input_ids[lo:hi].to(torch.int64)[None].to(device)
        logits = model(input_ids=ids).logits[0].float()
        out[lo:hi] = torch.softmax(logits, -1).amax(-1).cpu()
    return out


def apply_position_weights(calib: CalibrationSet, cfg: Mapping[str, Any], tokenizer: Any = None,
                           model: Any = None, device: str = "cpu") -> dict:
    """Re-weight ``calib``'s decode tokens in place per ``cfg`` (see the module docstring); returns the
    stats recorded in ``calibration.json``. ``confidence`` needs the dense ``model``."""
    kind = cfg.get("kind", "uniform")
    decode = calib.token_kind == KIND_DECODE
    if kind == "uniform" or not bool(decode.any()):
        return {"kind": kind}
    factor = float(cfg["factor"])
    if kind == "tail":
        marker = cfg.get("marker")
        marker_ids = tokenizer.encode(marker, add_special_tokens=False) if marker and tokenizer is not None else []
        mult = tail_multipliers(calib, int(cfg["tail_tokens"]), factor, marker_ids)
        stats: dict = {"kind": kind, "factor": factor, "tail_tokens": int(cfg["tail_tokens"]), "marker": marker,
                       "weighted_tokens": int(((mult != 1.0) & decode).sum())}
    elif kind == "confidence":
        if model is None:
            raise DatasetError("calibration.weights.position.kind confidence needs the dense model")
        conf = dense_confidence(model, calib, device)
        mult = 1.0 + factor * conf
        stats = {"kind": kind, "factor": factor, "mean_confidence": float(conf[decode].double().mean())}
    else:
        raise DatasetError(f"calibration.weights.position.kind: {kind!r} is not one of {', '.join(KINDS)}")
    before = float(calib.token_weight[decode].double().sum())
    weight = calib.token_weight.clone()
    weight[decode] = weight[decode] * mult[decode]
    after = float(weight[decode].double().sum())
    if after <= 0:
        raise DatasetError(f"calibration.weights.position: every decode token got weight 0 (kind {kind}, "
                           f"factor {factor}); raise factor")
    weight[decode] *= before / after
    calib.token_weight = weight
    calib.stats["position_weights"] = stats
    return stats
