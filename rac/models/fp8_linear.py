"""`Fp8Linear`: an nn.Linear replacement holding an FP8 E4M3 weight and its per-channel scale."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from rac.algorithms.fp8 import (
    FP8_DTYPE,
    dequantize_fp8,
    fp8_linear_dequantized,
    fp8_linear_scaled_mm,
    quantize_weight_fp8,
    scaled_mm_supported,
)


class Fp8Linear(nn.Module):
    """W8A8 FP8 linear: static weight scales, dynamic per-token activation scales.

    Forward is simulated (quantize-dequantize) on CPU and uses `torch._scaled_mm` on CUDA when the
    shapes allow. The state dict holds `weight` (float8_e4m3fn), `weight_scale` and `bias`.
    The simulated path keeps the float32 ``dequant(weight)`` between calls (the same values, computed
    once instead of per forward: a decode step would otherwise dequantize every weight of the model);
    it is rebuilt whenever ``weight`` or ``weight_scale`` is replaced or modified in place.
    """

    def __init__(self, weight: torch.Tensor, weight_scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        if weight.dtype != FP8_DTYPE or weight.dim() != 2:
            raise ValueError(f"Fp8Linear: weight must be 2-D float8_e4m3fn, got {weight.dtype} {tuple(weight.shape)}")
        if tuple(weight_scale.shape) not in ((weight.shape[0], 1), (weight.shape[0],)):
            raise ValueError(
                f"Fp8Linear: weight_scale must be [{weight.shape[0]}, 1], got {tuple(weight_scale.shape)}"
            )
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.weight_scale = nn.Parameter(weight_scale.reshape(-1, 1).to(torch.float32), requires_grad=False)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)
        self._dequantized: tuple[tuple, torch.Tensor] | None = None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Fp8Linear:
        q, scale = quantize_weight_fp8(linear.weight)
        return cls(q, scale, linear.bias)

    def dequantized_weight(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return dequantize_fp8(self.weight, self.weight_scale, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if scaled_mm_supported(x, self.weight):
            out_dtype = x.dtype if x.dtype in (torch.bfloat16, torch.float16) else torch.bfloat16
            return fp8_linear_scaled_mm(x, self.weight, self.weight_scale, self.bias, out_dtype)
        return fp8_linear_dequantized(x, self._simulated_weight(x.device), self.bias)

    def _simulated_weight(self, device: torch.device) -> torch.Tensor:
        """float32 dequant(weight) on ``device``, cached until either tensor changes (identity or version)."""
        key = (self.weight.data_ptr(), _version(self.weight), self.weight_scale.data_ptr(),
               _version(self.weight_scale), self.weight.device, device)
        if self._dequantized is None or self._dequantized[0] != key:
            self._dequantized = (key, dequantize_fp8(self.weight, self.weight_scale).to(device))
        return self._dequantized[1]

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8=e4m3"


def _version(tensor: torch.Tensor) -> int | None:
    """The in-place modification counter; None for inference tensors (made under ``torch.inference_mode``,
    which cannot be modified in place outside it and keep no counter)."""
    return None if tensor.is_inference() else tensor._version


def swap_in_fp8(
    model: nn.Module,
    module_names: Iterable[str] | Mapping[str, torch.Tensor],
    state: Mapping[str, torch.Tensor] | None = None,
) -> list[str]:
    """Replace the named nn.Linear modules by Fp8Linear; weights come from `state`
    (`<name>.weight` fp8 + `<name>.weight_scale`) or are quantized from the module's weight.

    A state dict may also be passed as `module_names` alone: its `*.weight_scale` keys name the modules.
    """
    if isinstance(module_names, Mapping) and state is None:
        state = module_names
        module_names = sorted(k[: -len(".weight_scale")] for k in state if k.endswith(".weight_scale"))
    modules = dict(model.named_modules())
    swapped = []
    for name in module_names:
        linear = modules.get(name)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"swap_in_fp8: {name!r} is not an nn.Linear in the model ({type(linear).__name__})")
        if state is not None:
            try:
                q, scale = state[f"{name}.weight"], state[f"{name}.weight_scale"]
            except KeyError as err:
                raise ValueError(f"swap_in_fp8: quantized weights lack {err.args[0]!r}") from None
            if tuple(q.shape) != tuple(linear.weight.shape):
                raise ValueError(f"swap_in_fp8: {name}.weight has shape {tuple(q.shape)}, model has "
                                 f"{tuple(linear.weight.shape)}")
            new = Fp8Linear(q.to(FP8_DTYPE).to(linear.weight.device), scale.to(linear.weight.device), linear.bias)
        else:
            new = Fp8Linear.from_linear(linear)
        parent_name, _, child = name.rpartition(".")
        setattr(modules[parent_name] if parent_name else model, child, new)
        swapped.append(name)
    return swapped
