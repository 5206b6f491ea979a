"""Faster ``nn.Linear`` layouts for CPU decoding, applied only for the duration of a block.

A decode step multiplies a few rows (the batch) by every weight of the model once; with MKL on an
AVX-512 Xeon the weight layout decides the speed of those small-M GEMMs far more than the FLOPs do
(benchmarks/README.md, "Generation"): for 32 rows and a stream of distinct 1536x576 weights,
``x @ W.T`` with ``W`` contiguous ran at 38 GFLOP/s, with ``W.T`` contiguous at 56 and with MKL's
packed GEMM format at 104. Two layouts, both exact (the same float32 products and sums):

* :func:`packed_linear_weights`: MKL ``sgemm`` packed weights for one row count (the batch size),
  used through ``torch.ops.mkl._mkl_linear``; any other row count (the prefill) falls back to the
  original weight inside the same op. Costs ~4x the weights' memory, so it is only used within
  :data:`PACKED_BUDGET_BYTES`.
* :func:`transposed_linear_weights`: ``W.t().contiguous().t()`` (same shape and values, transposed
  strides); the fallback where MKL's packed GEMM is unavailable or too large.

For bfloat16 weights on a CPU without bfloat16 GEMMs (no AVX512-BF16 / AMX; torch's bfloat16 GEMM
then runs several times slower than float32), :func:`float32_bf16_linears` computes them in float32
on float32 copies and rounds the output back: the arithmetic of a bfloat16 GEMM with float32
accumulation, 2.4-3.4x faster decoding on SmolLM2 (benchmarks/README.md).

:func:`fast_linear_weights` picks the layouts. Parameters are never replaced (hooks, tied weights and
``named_parameters`` are untouched) and every change is undone on exit, also after an error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch

# Packed weights take ~4x the float32 weights (MKL pads for its blocking); above this the transposed
# layout is used instead.
PACKED_BUDGET_BYTES = 4 * 2**30
# float32 copies of bfloat16 weights (CPUs without bfloat16 GEMMs) up to this size; above, bfloat16 as is
UPCAST_BUDGET_BYTES = 8 * 2**30


def _decoder_linears(model: torch.nn.Module, include_output: bool) -> list[torch.nn.Linear]:
    """The model's float ``nn.Linear`` layers with 2-D contiguous weights (each weight once)."""
    get_output = getattr(model, "get_output_embeddings", None)  # a transformers model method
    output = get_output() if get_output is not None else None
    skip = set() if include_output or output is None else {id(getattr(output, "weight", None))}
    seen: set[int] = set()
    found: list[torch.nn.Linear] = []
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        weight = module.weight
        if (
            id(weight) not in skip | seen
            and weight.dim() == 2
            and weight.dtype in (torch.float32, torch.bfloat16, torch.float16)
            and weight.is_contiguous()
            and min(weight.shape) > 1
        ):
            seen.add(id(weight))
            found.append(module)
    return found


@contextmanager
def transposed_linear_weights(model: torch.nn.Module) -> Iterator[int]:
    """Give every float ``nn.Linear`` weight of ``model`` transposed strides while the block runs.

    ``W`` becomes ``W.t().contiguous().t()`` (only ``.data`` is swapped). The output embedding is left
    as it is: its vocabulary-wide GEMM is not faster transposed, and when it is tied to the input
    embedding the lookup would read strided rows. On exit every weight is made contiguous again,
    bitwise equal, so saving and pruning code never sees strided tensors. Yields the count changed.
    """
    weights = [module.weight for module in _decoder_linears(model, include_output=False)]
    try:
        with torch.no_grad():
            for weight in weights:
                weight.data = weight.data.t().contiguous().t()
        yield len(weights)
    finally:
        with torch.no_grad():
            for weight in weights:
                weight.data = weight.data.contiguous()


def mkl_packing_available() -> bool:
    """Whether this torch build has MKL's packed float32 GEMM ops."""
    mkl = getattr(torch.ops, "mkl", None)
    return bool(getattr(torch._C, "has_mkl", False)) and hasattr(mkl, "_mkl_linear") \
        and hasattr(mkl, "_mkl_reorder_linear_weight")


def packed_bytes(model: torch.nn.Module) -> int:
    """Estimated memory of MKL-packed copies of every float32 linear weight (~4x the weights)."""
    return 4 * sum(m.weight.numel() * 4 for m in _decoder_linears(model, include_output=True)
                   if m.weight.dtype == torch.float32)


@contextmanager
def packed_linear_weights(model: torch.nn.Module, rows: int) -> Iterator[int]:
    """Run every float32 CPU ``nn.Linear`` (output embedding included) through MKL's packed GEMM,
    packed for inputs of ``rows`` rows (the decode batch), while the block runs.

    Each layer gets an instance-level ``forward`` calling ``torch.ops.mkl._mkl_linear`` with its
    packed copy; inputs with another row count use the original weight in the same op. On exit the
    instance ``forward`` is removed and the packed copies are freed. Yields the count changed."""
    layers = [m for m in _decoder_linears(model, include_output=True)
              if m.weight.dtype == torch.float32 and m.weight.device.type == "cpu"]
    try:
        for layer in layers:
            layer.forward = _packed_forward(layer.weight, layer.bias, rows)  # type: ignore[method-assign]
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _packed_forward(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Any:
    with torch.no_grad():
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.detach(), rows)

    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkl._mkl_linear(x, packed, weight, bias, rows)

    return forward


def native_bf16_gemm() -> bool:
    """Whether this CPU multiplies bfloat16 natively (AVX512-BF16 or AMX tiles): there bfloat16 GEMMs run
    ~5x float32; without, torch's bfloat16 GEMM runs several times slower than float32 (benchmarks/README.md)."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(check is None for check in checks):  # an older torch: ask oneDNN
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return any(bool(check()) for check in checks if check is not None)


@contextmanager
def float32_bf16_linears(model: torch.nn.Module, rows: int) -> Iterator[int]:
    """Compute every bfloat16 CPU ``nn.Linear`` (output embedding included) in float32 while the block runs.

    For CPUs without bfloat16 GEMMs (:func:`native_bf16_gemm`). Each layer gets an instance-level
    ``forward``: bfloat16 input -> float32 -> GEMM with a float32 copy of the weight (MKL-packed for
    ``rows`` rows within :data:`PACKED_BUDGET_BYTES`) -> bfloat16 output. The arithmetic of a bfloat16
    GEMM with float32 accumulation (what CUDA and AVX512-BF16 kernels do): the inputs and weights hold the
    same bfloat16 values, and each product of two of them is exact in float32; only the summation order
    may differ. Costs float32 copies of the weights (2x their bfloat16 size; packed ~10x), so only within
    :data:`UPCAST_BUDGET_BYTES`. On exit the instance ``forward`` is removed and the copies freed. Yields the
    count changed."""
    layers = [m for m in _decoder_linears(model, include_output=True)
              if m.weight.dtype == torch.bfloat16 and m.weight.device.type == "cpu"]
    float32_bytes = 4 * sum(m.weight.numel() for m in layers)
    if float32_bytes > UPCAST_BUDGET_BYTES:  # the copies would not fit: bfloat16 GEMMs as they are
        yield 0
        return
    packed = mkl_packing_available() and 5 * float32_bytes <= PACKED_BUDGET_BYTES  # the copy + its packed form
    try:
        for layer in layers:
            layer.forward = _float32_forward(layer.weight, layer.bias, rows, packed)  # type: ignore[method-assign]
        yield len(layers)
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def _float32_forward(weight: torch.Tensor, bias: torch.Tensor | None, rows: int, packed: bool) -> Any:
    with torch.no_grad():
        weight32 = weight.detach().float()
        bias32 = None if bias is None else bias.detach().float()
    inner = _packed_forward(weight32, bias32, rows) if packed else \
        (lambda x: torch.nn.functional.linear(x, weight32, bias32))

    def forward(x: torch.Tensor) -> torch.Tensor:
        if x.dtype != torch.bfloat16:  # what the layer itself would do (a dtype mismatch raises there)
            return torch.nn.functional.linear(x, weight, bias)
        return inner(x.float()).to(torch.bfloat16)

    return forward


@contextmanager
def fast_linear_weights(model: torch.nn.Module, rows: int) -> Iterator[str]:
    """The fastest exact layout available for decoding ``rows`` rows on CPU; yields its name
    (``"mkl-packed"`` or ``"transposed"`` for float32 weights; ``"bf16-as-float32"`` joins it when
    bfloat16 weights are computed in float32 on a CPU without bfloat16 GEMMs)."""
    with ExitStack() as stack:
        upcast = 0 if native_bf16_gemm() else stack.enter_context(float32_bf16_linears(model, rows))
        if mkl_packing_available() and packed_bytes(model) <= PACKED_BUDGET_BYTES:
            stack.enter_context(packed_linear_weights(model, rows))
            layout = "mkl-packed"
        else:
            stack.enter_context(transposed_linear_weights(model))
            layout = "transposed"
        yield f"{layout}+bf16-as-float32" if upcast else layout
