"""Throughput of dense vs compressed models, per phase, and a linear-layer micro-benchmark.

:func:`measure_phases` times prefill (one forward over ``batch x prompt_len`` random tokens that
fills a KV cache) and decode (``decode_len`` single-token steps reusing the cache) separately.
FP8-quantized models already run real FP8 GEMMs on CUDA (``rac.models.fp8_linear.Fp8Linear``
calls ``torch._scaled_mm``; on CPU it simulates). For 2:4-pruned models, :func:`kernelize` stores
2:4 weights compressed (``torch.sparse.to_sparse_semi_structured``; PyTorch's CUTLASS path refuses
sm90, so on Hopper it asks for cuSPARSELt; cuSPARSELt can be slower than dense at decode sizes). For
2:4 + FP8 models, ``kernel="2:4+fp8"`` uses torchao's FP8 semi-sparse config (cuSPARSELt FP8 on
sm90) when torchao is installed, and otherwise runs the FP8 GEMMs alone and says so. Every swap is
verified on a sample input and stops at the first refusal, so the report states what actually ran.
:func:`measure_generation` times end-to-end generation through an engine (vLLM: its FP8 kernels;
current vLLM has no 2:4 sparse kernels, so a 2:4 model runs dense GEMMs there).
"""

from __future__ import annotations

import inspect
import logging
import time
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_phases(model, batch_size: int, prompt_len: int, decode_len: int, repeats: int = 1,
                   seed: int = 0) -> dict:
    """Prefill and decode tokens/s of ``model`` (HF causal LM) with a KV cache: the median time of
    ``repeats`` measurements after one short warm-up."""
    if min(batch_size, prompt_len, repeats) < 1 or decode_len < 0:
        raise ValueError("throughput: batch_size, prompt_len and repeats must be >= 1, decode_len >= 0")
    device = next(model.parameters()).device
    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(seed)

    # transformers 5 renamed the KV-cache argument/output from ``past_key_values`` to ``cache``
    key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def run(p_len: int, d_len: int) -> tuple[float, float]:
        ids = torch.randint(100, vocab, (batch_size, p_len), generator=gen).to(device)
        _sync(device)
        start = time.perf_counter()
        out = model(input_ids=ids, use_cache=True)
        past, nxt = out[key], out.logits[:, -1:].argmax(-1)
        _sync(device)
        prefill = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(d_len):
            out = model(input_ids=nxt, use_cache=True, **{key: past})
            past, nxt = out[key], out.logits[:, -1:].argmax(-1)
        _sync(device)
        return prefill, time.perf_counter() - start

    run(min(prompt_len, 16), min(decode_len, 2))
    times = sorted(run(prompt_len, decode_len) for _ in range(repeats))
    prefill = sorted(t[0] for t in times)[len(times) // 2]
    decode = sorted(t[1] for t in times)[len(times) // 2]
    return {
        "prefill_seconds": round(prefill, 5),
        "decode_seconds": round(decode, 5),
        "prefill_tokens_per_s": batch_size * prompt_len / prefill,
        "decode_tokens_per_s": batch_size * decode_len / decode if decode_len else 0.0,
        "repeats": repeats,
    }


def measure_generation(engine, vocab_size: int, batch_size: int, prompt_len: int, decode_len: int,
                       repeats: int = 1, seed: int = 0) -> dict:
    """Generated tokens/s of ``engine`` (rac engine) for ``batch_size`` random prompts of ``prompt_len``
    tokens, greedy, up to ``decode_len`` new tokens each: the median of ``repeats`` runs after a warm-up."""
    from rac.engines.base import SamplingConfig

    if min(batch_size, prompt_len, decode_len, repeats) < 1:
        raise ValueError("throughput: batch_size, prompt_len, decode_len and repeats must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    prompts = torch.randint(100, vocab_size, (batch_size, prompt_len), generator=gen).tolist()
    engine.generate(prompts[:1], SamplingConfig(max_new_tokens=2, temperature=0.0, seed=seed))
    sampling = SamplingConfig(max_new_tokens=decode_len, temperature=0.0, seed=seed)
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = engine.generate(prompts, sampling)
        runs.append((time.perf_counter() - start, sum(len(g.completion_ids) for gens in outputs for g in gens)))
    wall, generated = sorted(runs)[len(runs) // 2]
    return {"generation_seconds": round(wall, 5), "generated_tokens": generated,
            "generation_tokens_per_s": generated / wall, "prompt_tokens": batch_size * prompt_len,
            "repeats": repeats}


class SemiStructuredLinear(nn.Module):
    """Linear layer whose 2:4-sparse weight is stored compressed (cuSPARSELt / CUTLASS)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

        if linear.weight.is_cuda and torch.cuda.get_device_capability(linear.weight.device)[0] >= 9:
            SparseSemiStructuredTensor._FORCE_CUTLASS = False  # CUTLASS refuses sm90: cuSPARSELt there
        self.weight = nn.Parameter(to_sparse_semi_structured(linear.weight.data), requires_grad=False)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x.reshape(-1, x.shape[-1]), self.weight, self.bias)
        return out.reshape(*x.shape[:-1], -1)


def is_two_four(weight: torch.Tensor) -> bool:
    """True when every group of 4 consecutive input weights has at most 2 nonzeros."""
    if weight.shape[-1] % 4:
        return False
    return bool(((weight.reshape(-1, 4) != 0).sum(-1) <= 2).all())


def _swap(model: nn.Module, build: Callable[[nn.Linear], nn.Module], accept: Callable[[nn.Linear], bool],
          skip: tuple[str, ...]) -> tuple[int, str | None]:
    swapped, error = 0, None
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            if not isinstance(child, nn.Linear) or any(s in full for s in skip) or not accept(child):
                continue
            try:
                new = build(child)
                probe = torch.randn(16, child.in_features, device=child.weight.device, dtype=child.weight.dtype)
                new(probe)
            except (RuntimeError, TypeError, ValueError) as exc:  # NotImplemented is a RuntimeError
                return swapped, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
            setattr(module, child_name, new)
            swapped += 1
    return swapped, error


def _torchao_fp8_semi_sparse(model: nn.Module, skip: tuple[str, ...]) -> dict:
    """2:4 + FP8 through torchao (FP8 weights and activations, cuSPARSELt) on every 2:4 linear layer."""
    try:  # torchao 0.16 dropped this config: 2:4+FP8 needs torchao <= 0.15
        from torchao.quantization import Float8DynamicActivationFloat8SemiSparseWeightConfig, quantize_
    except ImportError as exc:
        return {"kernel": "none", "layers": 0,
                "note": f"2:4+FP8 needs torchao <= 0.15 with its FP8 semi-sparse config ({type(exc).__name__}: {exc})"}

    def accept(module: nn.Module, name: str) -> bool:
        return (isinstance(module, nn.Linear) and not any(s in name for s in skip)
                and is_two_four(module.weight.data))

    layers = sum(accept(m, n) for n, m in model.named_modules())
    try:
        quantize_(model, Float8DynamicActivationFloat8SemiSparseWeightConfig(), filter_fn=accept)
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as exc:
        return {"kernel": "none", "layers": 0, "note": f"torchao 2:4+FP8 refused: {str(exc).splitlines()[0][:200]}"}
    return {"kernel": "2:4+fp8", "layers": layers, "note": "torchao Float8DynamicActivationFloat8SemiSparseWeight"}


def kernelize(model: nn.Module, kernel: str, skip: tuple[str, ...] = ("lm_head",)) -> dict:
    """Put ``kernel`` ("fp8" | "2:4" | "2:4+fp8" | "none") kernels in place and say what actually runs.

    ``2:4+fp8`` expects the bf16 2:4-pruned model (torchao quantizes it to FP8 itself); without torchao
    or CUDA it reports ``none`` and the caller measures the FP8-only model instead."""
    device = next(model.parameters()).device
    if kernel not in ("fp8", "2:4", "2:4+fp8", "none"):
        raise ValueError(f"unknown kernel {kernel!r}; expected fp8, 2:4, 2:4+fp8 or none")
    if kernel == "2:4+fp8":
        if device.type != "cuda":
            return {"kernel": "none", "layers": 0, "note": "2:4+FP8 kernels need CUDA; dense matmuls used"}
        return _torchao_fp8_semi_sparse(model, skip)
    if kernel == "fp8":
        from rac.models.fp8_linear import Fp8Linear

        layers = sum(isinstance(m, Fp8Linear) for m in model.modules())
        real = device.type == "cuda"
        return {"kernel": "fp8" if real and layers else "none", "layers": layers,
                "note": "torch._scaled_mm" if real else "FP8 simulated (quantize-dequantize) on CPU"}
    if kernel == "none":
        return {"kernel": "none", "layers": 0}
    if device.type != "cuda":
        return {"kernel": "none", "layers": 0, "note": "2:4 kernels need CUDA; dense matmuls used"}
    swapped, error = _swap(model, SemiStructuredLinear, lambda lin: is_two_four(lin.weight.data), skip)
    report = {"kernel": "2:4" if swapped else "none", "layers": swapped}
    if error:
        report["note"] = f"2:4 kernel refused after {swapped} layers: {error}"
    return report


def _time_cuda(fn: Callable[[], object], iters: int) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def linear_speedups(shapes: list[tuple[int, int]], device: str,
                    token_counts: tuple[int, ...] = (16, 256, 4096, 16384),
                    dtype: torch.dtype = torch.bfloat16, iters: int = 20) -> list[dict]:
    """Milliseconds of dense vs FP8 vs 2:4 ``x @ W^T`` per (out, in) shape and token count (CUDA)."""
    if not str(device).startswith("cuda") or not torch.cuda.is_available():
        raise ValueError(f"linear_speedups needs a CUDA device (got {device!r})")
    from torch.sparse import to_sparse_semi_structured

    from rac.algorithms.fp8 import fp8_linear_scaled_mm, quantize_weight_fp8

    rows = []
    for n_out, n_in in shapes:
        weight = torch.randn(n_out, n_in, device=device, dtype=dtype)
        weight = weight * torch.tensor([1, 1, 0, 0], device=device, dtype=dtype).repeat(n_in // 4)
        w_fp8, w_scale = quantize_weight_fp8(weight)
        try:
            sparse, sparse_error = to_sparse_semi_structured(weight), None
        except (RuntimeError, ValueError) as exc:
            sparse, sparse_error = None, str(exc).splitlines()[0][:200]
        for tokens in token_counts:
            x = torch.randn(tokens, n_in, device=device, dtype=dtype)
            row: dict = {"shape": [n_out, n_in], "tokens": tokens,
                         "dense_ms": _time_cuda(partial(F.linear, x, weight), iters)}
            try:
                row["fp8_ms"] = _time_cuda(partial(fp8_linear_scaled_mm, x, w_fp8, w_scale, None, dtype), iters)
            except RuntimeError as exc:
                row["fp8_ms"], row["fp8_error"] = None, str(exc).splitlines()[0][:200]
            if sparse is not None:
                try:
                    row["sparse24_ms"] = _time_cuda(partial(F.linear, x, sparse), iters)
                except RuntimeError as exc:
                    row["sparse24_ms"], row["sparse24_error"] = None, str(exc).splitlines()[0][:200]
            else:
                row["sparse24_ms"], row["sparse24_error"] = None, sparse_error
            for key in ("fp8", "sparse24"):
                ms = row[f"{key}_ms"]
                row[f"{key}_speedup"] = row["dense_ms"] / ms if ms else None
            rows.append(row)
    return rows
