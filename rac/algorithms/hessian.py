"""Layer Hessians H = sum_t w_t x_t x_t^T of linear-layer inputs, with per-token weights."""

from __future__ import annotations

import torch

from rac.errors import RacError


class HessianError(RacError, ValueError):
    """Inputs whose shapes or dtypes do not fit the Hessian being accumulated."""


# Symmetric Gram product on CPU. X^T X is symmetric, so only the column tiles on and above the
# diagonal are multiplied ((k + 1) / 2k of the FLOPs for k tiles) and the others are mirrored. Each
# tile GEMM must stay large for MKL's full rate and the mirroring costs O(d^2) per call, so tiles are
# at least GRAM_TILE columns wide, there are at most GRAM_MAX_TILES of them, and batches of fewer
# than GRAM_MIN_ROWS rows keep one GEMM. On a 2-core Xeon (benchmarks/bench_hessian.py, README):
# d = 1536 ran 1.03x / 1.14x / 1.23x / 1.33x faster than one `addmm_` at 512 / 1k / 2k / 4k rows;
# two 288-column tiles of d = 576 gained nothing reliable; d = 3584 in 9 tiles of ~400 columns lost
# at 512 rows (0.89x) and gained 1.17x at 4k, in 4 tiles 1.1-1.6x from 2k rows.
GRAM_TILE = 384
GRAM_MAX_TILES = 4
GRAM_MIN_ROWS = 1024


def add_gram_(H: torch.Tensor, scaled: torch.Tensor, flat: torch.Tensor, tile: int | None = None,
              min_rows: int | None = None) -> torch.Tensor:
    """H += scaled^T @ flat in place, for a product known to be symmetric (``scaled = w * flat``).

    ``H`` is float32 [d, d]; ``scaled`` and ``flat`` are float32 [n, d]. Only upper tiles are
    computed; each off-diagonal tile is computed once and added to both of its mirror positions.
    Tiles are at least ``tile`` (default :data:`GRAM_TILE`) columns wide and at most
    :data:`GRAM_MAX_TILES`; with d < 2 * ``tile`` or n < ``min_rows`` (default
    :data:`GRAM_MIN_ROWS`) it is one ``addmm_``. Returns ``H``.
    """
    tile = GRAM_TILE if tile is None else tile
    min_rows = GRAM_MIN_ROWS if min_rows is None else min_rows
    n, d = flat.shape
    tiles = min(d // tile, GRAM_MAX_TILES) if tile > 0 and n >= min_rows else 1
    if tiles <= 1:
        return H.addmm_(scaled.t(), flat)
    edges = [round(i * d / tiles) for i in range(tiles + 1)]
    spans = list(zip(edges[:-1], edges[1:]))
    for i, (a0, a1) in enumerate(spans):
        left = scaled[:, a0:a1].t()
        H[a0:a1, a0:a1].addmm_(left, flat[:, a0:a1])
        for b0, b1 in spans[i + 1 :]:
            block = left @ flat[:, b0:b1]
            H[a0:a1, b0:b1] += block
            H[b0:b1, a0:a1] += block.t()
    return H


def _mm_out_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a @ b with bf16 operands and float32 output where torch supports it, else in float32."""
    try:
        return torch.mm(a.to(torch.bfloat16), b.to(torch.bfloat16), out_dtype=torch.float32)
    except (TypeError, RuntimeError):  # incl. NotImplemented (a RuntimeError)
        return torch.mm(a.float(), b.float())


def _flatten(x: torch.Tensor, weight: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    if x.dim() < 1:
        raise HessianError("hessian input must have a feature dimension")
    flat = x.reshape(-1, x.shape[-1])
    if weight is None:
        return flat, None
    if tuple(weight.shape) != tuple(x.shape[:-1]):
        raise HessianError(
            f"token weights shape {tuple(weight.shape)} does not match the input's token shape {tuple(x.shape[:-1])}"
        )
    return flat, weight.reshape(-1).to(device=x.device, dtype=torch.float32)


def accumulate_hessian(H: torch.Tensor | None, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Return H + sum_t w_t x_t x_t^T (float32, [d, d]) for x of shape [..., d] and weights [...].

    Tokens with weight 0 (pads) are dropped before the product, and with all weights 1 (packed
    text) the scaling copy is skipped. On CUDA the products run in bf16 with float32 output (13x
    faster than a float32 GEMM on an H200 at no loss); on CPU everything is float32, added in place,
    and only the upper tiles of the symmetric product are multiplied (:func:`add_gram_`).
    """
    flat, w = _flatten(x, weight)
    d = flat.shape[-1]
    if H is not None and (tuple(H.shape) != (d, d) or H.dtype != torch.float32):
        raise HessianError(f"Hessian must be float32 [{d}, {d}], got {H.dtype} {tuple(H.shape)}")
    if w is not None:
        keep = w != 0
        if not bool(keep.all()):
            flat, w = flat[keep], w[keep]
        if bool((w == 1).all()):
            w = None
    if flat.is_cuda:
        scaled = flat if w is None else (flat.float() * w[:, None])
        update = _mm_out_fp32(scaled.t(), flat)
        return update if H is None else H.add_(update)
    flat = flat.float()
    scaled = flat if w is None else flat * w[:, None]
    if H is None:
        H = torch.zeros(d, d, dtype=torch.float32, device=flat.device)
    return add_gram_(H, scaled, flat)


class HessianAccumulator:
    """Running weighted Hessian; `finalize()` divides by the total token weight so scale is N-free."""

    def __init__(self, dim: int | None = None, device: str | torch.device | None = None) -> None:
        self.H: torch.Tensor | None = None
        if dim is not None:
            self.H = torch.zeros(dim, dim, dtype=torch.float32, device=device)
        self.total_weight = torch.zeros((), dtype=torch.float64, device=device)
        self.tokens = 0

    def add(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        """Add the tokens of x ([..., d]) with optional per-token weights ([...], 0 = excluded)."""
        self.H = accumulate_hessian(self.H, x, weight)
        n = x.reshape(-1, x.shape[-1]).shape[0]
        self.tokens += n
        if weight is None:
            self.total_weight = self.total_weight.to(x.device) + n
        else:
            self.total_weight = self.total_weight.to(x.device) + weight.to(x.device).double().sum()

    def finalize(self) -> torch.Tensor:
        """H / total weight (float32). Raises when nothing with positive weight was added."""
        total = float(self.total_weight)
        if self.H is None or total <= 0:
            raise HessianError("no calibration tokens with positive weight reached this layer")
        return self.H / total
