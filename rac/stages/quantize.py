"""Stage `quantize`: FP8 W8A8 (E4M3) of the targeted linear layers, after pruning.

Weights get static per-output-channel scales; activations are quantized per token at run time
(by `rac.models.fp8_linear.Fp8Linear`). Pruned zeros and N:M patterns are verified to survive.
Artifact: `weights.safetensors` (`<name>.weight` float8_e4m3fn + `<name>.weight_scale` float32 [out, 1])
and `report.json` (per module: shape, sparsity, pattern, relative weight error, scale range).
"""

from __future__ import annotations

import fnmatch
import json
import time
from pathlib import Path

import torch
from torch import nn

from rac.algorithms.fp8 import dequantize_fp8, quantize_weight_fp8
from rac.algorithms.masks import check_nm, parse_pattern
from rac.engine.stage import Stage, StageContext
from rac.errors import RacError

SCHEMES = ("fp8_w8a8",)


class QuantizeError(RacError, ValueError):
    """Bad quantize settings, or quantization that broke the sparsity it was given."""


def _matches(name: str, entries: list[str]) -> bool:
    short = name.rsplit(".", 1)[-1]
    return any(name == e or short == e or name.endswith("." + e) or fnmatch.fnmatch(name, e) for e in entries)


def target_modules(model: nn.Module, targets: list[str], ignore: list[str]) -> list[str]:
    """Full names of the nn.Linear modules selected by `targets` (attn | mlp | short/full names,
    globs, lm_head) minus `ignore`, in model order."""
    from rac.models.blocks import find_blocks, linear_modules

    prefix, blocks = find_blocks(model)
    chosen: list[str] = []
    for i, block in enumerate(blocks):
        for info in linear_modules(block).values():
            full = f"{prefix}.{i}.{info.qualified}"
            if info.role in targets or _matches(full, targets):
                chosen.append(full)
    inside = set(chosen)
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and name not in inside and _matches(name, [t for t in targets if t not in ("attn", "mlp")]):
            chosen.append(name)
    return [n for n in chosen if not _matches(n, ignore)]


def pruned_patterns(prune_dir: Path | None) -> dict[str, str | None]:
    """Module name -> N:M pattern string (or None) from the prune artifact's report.json."""
    if prune_dir is None or not (Path(prune_dir) / "report.json").is_file():
        return {}
    file = Path(prune_dir) / "report.json"
    try:
        report = json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise QuantizeError(f"{file}: not valid JSON ({err})") from None
    modules = report.get("modules", {}) if isinstance(report, dict) else {}
    items = modules.items() if isinstance(modules, dict) else ((m.get("name", m.get("module")), m) for m in modules)
    out: dict[str, str | None] = {}
    for name, entry in items:
        if isinstance(name, str) and isinstance(entry, dict):
            out[name.removesuffix(".weight")] = entry.get("pattern")
    return out


def quantize_module(name: str, weight: torch.Tensor, pattern: str | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """FP8-quantize one weight; raise QuantizeError if a zero became nonzero or N:M broke."""
    W = weight.detach().float()
    q, scale = quantize_weight_fp8(W)
    zeros = W == 0
    if bool((q[zeros].float() != 0).any()):
        raise QuantizeError(f"quantize: {name}: a pruned zero became nonzero after FP8 quantization")
    nm = parse_pattern(pattern)
    if nm is not None and not check_nm(q.float(), *nm):
        raise QuantizeError(f"quantize: {name}: N:M pattern {pattern} no longer holds after quantization")
    deq = dequantize_fp8(q, scale)
    norm = float(W.norm())
    entry = {
        "shape": list(W.shape),
        "sparsity": float(zeros.float().mean()),
        "pattern": pattern,
        "rel_error": float((deq - W).norm()) / norm if norm > 0 else 0.0,
        "scale_min": float(scale.min()),
        "scale_max": float(scale.max()),
    }
    return q.cpu(), scale.cpu(), entry


def run(ctx: StageContext) -> dict:
    from safetensors.torch import save_file

    from rac.models.load import apply_weights, load_model

    cfg = ctx.settings.quantize
    if cfg is None:
        raise QuantizeError("the quantize stage needs a quantize section")
    scheme = cfg.scheme
    if scheme not in SCHEMES:
        raise QuantizeError(f"quantize.scheme: unknown scheme {scheme!r} (known: {', '.join(SCHEMES)})")
    targets, ignore = list(cfg.targets), list(cfg.ignore)
    t0 = time.perf_counter()
    model, _ = load_model(ctx.settings.model.as_dict(), ctx.device)
    prune_dir = ctx.inputs.get("prune")
    if prune_dir is not None:
        apply_weights(model, prune_dir, ctx.inputs.get("recover"))
    patterns = pruned_patterns(prune_dir)
    names = target_modules(model, targets, ignore)
    if not names:
        raise QuantizeError(f"quantize.targets {targets} minus quantize.ignore {ignore} selects no linear layer")
    modules = dict(model.named_modules())
    tensors: dict[str, torch.Tensor] = {}
    report: dict[str, dict] = {}
    task = ctx.progress.task("quantize fp8", len(names))
    for name in names:
        q, scale, entry = quantize_module(name, modules[name].weight, patterns.get(name))
        tensors[f"{name}.weight"] = q.contiguous()
        tensors[f"{name}.weight_scale"] = scale.contiguous()
        report[name] = entry
        task.advance()
    task.close()
    save_file(tensors, str(ctx.out_dir / "weights.safetensors"))
    errors = [e["rel_error"] for e in report.values()]
    summary = {
        "scheme": scheme,
        "modules": len(names),
        "mean_rel_error": sum(errors) / len(errors),
        "max_rel_error": max(errors),
        "nm_checked": sum(1 for e in report.values() if e["pattern"]),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    (ctx.out_dir / "report.json").write_text(json.dumps({"summary": summary, "ignore": ignore, "modules": report}, indent=1))
    ctx.log.info("quantized %d modules to FP8 (mean rel. weight error %.4f)", len(names), summary["mean_rel_error"])
    return summary


STAGE = Stage(
    name="quantize",
    needs=("prune", "recover"),
    reads=("quantize", "model"),
    version="1",
    run=run,
    enabled=lambda r: bool(r.get("quantize")),
    description="FP8 W8A8 quantization (static per-channel weights, dynamic per-token activations)",
)
