"""Decode-step attention that skips the empty tail of a static KV cache (CPU fast path).

A static cache is allocated for ``prompt width + max_new_tokens`` positions up front, and
transformers' SDPA attention reads all of them at every decode step, masking the slots not written
yet. With left padding every row of the batch has written exactly the same slots (the prompt width
plus the steps so far), so the columns after the last one any row may attend to are dead for the
whole batch. On CPU a one-token attention step is bound by reading the cache (~5 GB/s here), so
reading dead slots costs time in proportion: at step ``t`` of ``T`` new tokens roughly
``(T - t) / (width + T)`` of the read is wasted.

:func:`cropped_static_attention` registers one attention function with transformers'
``AttentionInterface`` (the documented extension point; the mask is built by the ``sdpa`` mask
function) that crops key, value and mask to the last live column and then calls transformers' own
SDPA attention. The masked columns it drops contribute ``exp(-inf) = 0`` to the softmax, so the
result is the same attention (rounding aside). Prefill, masks that are not boolean and models whose
attention is not ``sdpa`` are left as they are.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

IMPLEMENTATION = "rac_sdpa_cropped"


def live_columns(mask: torch.Tensor) -> int:
    """1 + the last key column any query of the batch may attend to (0 when none may)."""
    columns = mask.reshape(-1, mask.shape[-1]).any(dim=0)
    found = torch.nonzero(columns)
    return int(found[-1, 0]) + 1 if found.numel() else 0


class _CroppedSdpa:
    """The registered attention function; remembers the live width of the last mask it saw (every
    layer of one decode step gets the same mask object, so it is computed once per step)."""

    def __init__(self) -> None:
        self._mask: torch.Tensor | None = None
        self._live = 0

    def __call__(self, module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                 attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        if query.shape[2] == 1 and attention_mask is not None and attention_mask.dtype == torch.bool \
                and attention_mask.shape[-1] == key.shape[2]:
            if attention_mask is not self._mask:
                self._mask, self._live = attention_mask, live_columns(attention_mask)
            live = max(self._live, 1)
            if live < key.shape[2]:
                key, value = key[:, :, :live], value[:, :, :live]
                attention_mask = attention_mask[..., :live]
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


_FUNCTION = _CroppedSdpa()


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(IMPLEMENTATION, _FUNCTION)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)


@contextmanager
def cropped_static_attention(model: Any) -> Iterator[bool]:
    """While the block runs, a model using ``sdpa`` attention uses the cropping variant; yields
    whether it switched. The previous implementation is restored on exit, also after an error."""
    config = getattr(model, "config", None)
    previous = getattr(config, "_attn_implementation", None)
    if previous != "sdpa" or not hasattr(model, "set_attn_implementation"):
        yield False
        return
    _register()
    model.set_attn_implementation(IMPLEMENTATION)
    try:
        yield True
    finally:
        _FUNCTION._mask = None
        model.set_attn_implementation(previous)
