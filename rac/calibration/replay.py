"""Teacher-forced replay batches of a calibration set.

Decode-time activations come from replaying whole ``[prompt + completion]`` traces through the model
(a causal model gives the same activations as step-by-step decoding). Batches are RIGHT padded, so
every real token keeps its true position 0..len-1 and sees its full real prefix; traces are never
cut into windows. Pads carry weight 0 and kind -1, so they never enter a Hessian.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from rac.calibration.mix import CalibrationSet

PAD_KIND = -1


@dataclass
class Batch:
    """A right-padded batch; ``indices`` are the sequence numbers in the calibration set."""

    input_ids: torch.Tensor  # long [B, T]
    attention_mask: torch.Tensor  # long [B, T], 1 on real tokens
    token_weight: torch.Tensor  # float32 [B, T], 0 on pads
    token_kind: torch.Tensor  # int8 [B, T], -1 on pads
    indices: list[int]

    @property
    def num_tokens(self) -> int:
        return int(self.attention_mask.sum())

    def to(self, device: str | torch.device) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device),
                     self.token_weight.to(device), self.token_kind.to(device), self.indices)


def _groups(lengths: list[int], batch_size: int, max_tokens: int | None) -> list[list[int]]:
    """Sequence indices grouped longest-first; a group has at most ``batch_size`` sequences and at most
    ``max_tokens`` padded tokens (a single longer sequence still forms its own group)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    groups: list[list[int]] = []
    for i in order:
        if groups:
            group = groups[-1]
            width = lengths[group[0]]  # longest first: the first member sets the padded width
            fits_tokens = max_tokens is None or width * (len(group) + 1) <= max_tokens
            if len(group) < batch_size and fits_tokens:
                group.append(i)
                continue
        groups.append([i])
    return groups


def iter_batches(calib: CalibrationSet, batch_size: int, max_tokens: int | None = None) -> Iterator[Batch]:
    """Every sequence of ``calib`` exactly once, in right-padded batches (longest sequences first)."""
    if batch_size < 1:
        raise ValueError(f"replay batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"replay max_tokens must be >= 1, got {max_tokens}")
    lengths = calib.lengths()
    for group in _groups(lengths, batch_size, max_tokens):
        width = lengths[group[0]]
        ids = torch.zeros((len(group), width), dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        weight = torch.zeros((len(group), width), dtype=torch.float32)
        kind = torch.full((len(group), width), PAD_KIND, dtype=torch.int8)
        for row, index in enumerate(group):
            seq_ids, seq_weight, seq_kind = calib.sequence(index)
            n = seq_ids.numel()
            ids[row, :n] = seq_ids.long()
            mask[row, :n] = 1
            weight[row, :n] = seq_weight
            kind[row, :n] = seq_kind
        yield Batch(ids, mask, weight, kind, list(group))
