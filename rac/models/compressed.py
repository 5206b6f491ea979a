"""The compressed-tensors checkpoint layout vLLM and transformers load for FP8 W8A8 models.

Weights in float8 (E4M3) with per-channel ``weight_scale``, dynamic per-token activations, every
Linear except the ignored ones; written by the export stage and by evaluate when vLLM must load the
quantized model from disk (so neither stage imports the other).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from rac.errors import RacError


class CompressedTensorsError(RacError, ValueError):
    """A quantize artifact that does not fit the model (e.g. a non-linear module was quantized)."""


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict without tied duplicates (lm_head tied to the embedding is stored once)."""
    seen: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, tensor in model.state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.dtype)
        if tensor.numel() and key in seen:
            continue
        seen[key] = name
        out[name] = tensor.detach().contiguous().cpu()
    return out


def quantization_config(ignore: list[str]) -> dict:
    """compressed-tensors `quantization_config` for FP8 W8A8: channel-wise static weights,
    dynamic per-token activations, every Linear except `ignore`."""
    import compressed_tensors
    from compressed_tensors.config import CompressionFormat
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme, QuantizationStatus
    from compressed_tensors.quantization.quant_scheme import FP8_DYNAMIC

    qc = QuantizationConfig(
        config_groups={"group_0": QuantizationScheme(targets=["Linear"], **FP8_DYNAMIC)},
        ignore=ignore,
        format=CompressionFormat.float_quantized.value,
        quantization_status=QuantizationStatus.COMPRESSED,
    )
    return {
        "version": compressed_tensors.__version__,
        "quant_method": "compressed-tensors",
        "sparsity_config": {},
        "transform_config": {},
        **qc.model_dump(exclude=["quant_method"]),
    }


def write_compressed_tensors(model: nn.Module, quantize_dir: Path, out: Path, max_shard_size: str = "5GB") -> dict:
    """Write model weights with the FP8 modules of `quantize_dir` replacing their dense weights (sharded
    like ``save_pretrained`` above ``max_shard_size``)."""
    import json

    from safetensors.torch import load_file

    from rac.models.shards import save_sharded

    fp8 = load_file(str(Path(quantize_dir) / "weights.safetensors"))
    quantized = sorted(k[: -len(".weight_scale")] for k in fp8 if k.endswith(".weight_scale"))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    missing = [n for n in quantized if n not in linears]
    if missing:
        raise CompressedTensorsError(f"{quantize_dir}/weights.safetensors: {missing[0]!r} is not a linear layer of the model")
    state = _state_dict(model)
    for name in quantized:
        state[f"{name}.weight"] = fp8[f"{name}.weight"].contiguous()
        state[f"{name}.weight_scale"] = fp8[f"{name}.weight_scale"].to(torch.float32).reshape(-1, 1).contiguous()
    ignore = [n for n in linears if n not in set(quantized)]
    save_sharded(state, out, max_shard_size)
    config_file = out / "config.json"
    config = json.loads(config_file.read_text())
    config["quantization_config"] = quantization_config(ignore)
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True))
    return {"quantized_modules": len(quantized), "ignored": ignore}
