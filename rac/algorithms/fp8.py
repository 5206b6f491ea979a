"""FP8 E4M3 W8A8: static per-output-channel weight scales, dynamic per-token activation scales.

On CPU the matmul is simulated (quantize-dequantize of both operands, float32 product) so accuracy
can be measured; on CUDA `fp8_linear_scaled_mm` runs the real FP8 GEMM (`torch._scaled_mm`).
Zeros map to exactly zero, so pruned weights stay pruned.
"""

from __future__ import annotations

import torch

from rac.errors import RacError

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = float(torch.finfo(FP8_DTYPE).max)  # 448


class Fp8Error(RacError, ValueError):
    """Shapes or devices that the FP8 path cannot handle."""


def _scale(absmax: torch.Tensor) -> torch.Tensor:
    """absmax / 448, with 1.0 for all-zero rows (their quantized values are zero anyway)."""
    absmax = absmax.to(torch.float32)
    return torch.where(absmax > 0, absmax / FP8_MAX, torch.ones_like(absmax))


def _cast(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.float32) / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def quantize_weight_fp8(W: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(q float8_e4m3fn [out, in], scale float32 [out, 1]) with scale = per-row absmax / 448."""
    if W.dim() != 2:
        raise Fp8Error(f"fp8: weight must be 2-D [out, in], got {tuple(W.shape)}")
    scale = _scale(W.detach().abs().amax(dim=1, keepdim=True))
    return _cast(W.detach(), scale), scale


def dequantize_fp8(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """q * scale in `dtype` (scale broadcasts: [out, 1] per channel or [..., 1] per token)."""
    return (q.to(torch.float32) * scale.to(torch.float32)).to(dtype)


def quantize_activation_fp8_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token quantization of x [..., d]: (q, scale [..., 1] float32)."""
    scale = _scale(x.detach().abs().amax(dim=-1, keepdim=True))
    return _cast(x, scale), scale


def fp8_linear_reference(
    x: torch.Tensor, q: torch.Tensor, w_scale: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Simulated W8A8 linear: dequant(quant(x)) @ dequant(q)^T + bias, returned in x's dtype."""
    if x.shape[-1] != q.shape[1]:
        raise Fp8Error(f"fp8 linear: input features {x.shape[-1]} != weight in-features {q.shape[1]}")
    return fp8_linear_dequantized(x, dequantize_fp8(q, w_scale).to(x.device), bias)


def fp8_linear_dequantized(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`fp8_linear_reference` with the weight already dequantized (float32 ``dequant(q)``): the
    activations are still quantized per token, so the result is the same; a caller that keeps ``w``
    across calls saves one weight dequantization per forward."""
    if x.shape[-1] != w.shape[1]:
        raise Fp8Error(f"fp8 linear: input features {x.shape[-1]} != weight in-features {w.shape[1]}")
    qa, sa = quantize_activation_fp8_per_token(x)
    a = dequantize_fp8(qa, sa)
    y = a @ w.t()
    if bias is not None:
        y = y + bias.to(torch.float32)
    return y.to(x.dtype)


def scaled_mm_supported(x: torch.Tensor, q: torch.Tensor) -> bool:
    """True when torch._scaled_mm can run this product: CUDA, the op exists, dims multiples of 16."""
    return (
        x.is_cuda
        and q.is_cuda
        and hasattr(torch, "_scaled_mm")
        and q.dtype == FP8_DTYPE
        and q.shape[0] % 16 == 0
        and q.shape[1] % 16 == 0
    )


def fp8_linear_scaled_mm(
    x: torch.Tensor,
    q: torch.Tensor,
    w_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Real FP8 GEMM on CUDA: per-token activation scales x per-channel weight scales (row-wise)."""
    if not scaled_mm_supported(x, q):
        raise Fp8Error(
            "fp8_linear_scaled_mm needs CUDA tensors, torch._scaled_mm, a float8_e4m3fn weight and "
            f"dimensions divisible by 16 (weight {tuple(q.shape)}, input on {x.device})"
        )
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    rows = x2.shape[0]
    pad = (-rows) % 16
    if pad:
        x2 = torch.nn.functional.pad(x2, (0, 0, 0, pad))
    qa, sa = quantize_activation_fp8_per_token(x2)
    y = torch._scaled_mm(
        qa,
        q.t(),  # [in, out] column-major view of the row-major [out, in] weight
        scale_a=sa.to(torch.float32),
        scale_b=w_scale.to(torch.float32).reshape(1, -1),
        bias=None if bias is None else bias.to(out_dtype),
        out_dtype=out_dtype,
    )
    return y[:rows].reshape(*lead, q.shape[0]).to(x.dtype)
