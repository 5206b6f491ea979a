"""Shared stage-test fixtures: a prune artifact on the tiny model and a quantize-stage context."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from rac.algorithms.masks import nm_mask
from rac.pipeline.stage import StageContext

MLP_IN = ("gate_proj", "up_proj")


def _make_prune_artifact(model_dir: Path, out: Path, pattern: str = "2:4", lie: bool = False) -> Path:
    """A prune artifact: N:M magnitude-pruned gate/up weights of every block + report.json
    (``lie``: the report claims the pattern but the weights stay dense)."""
    weights = load_file(str(model_dir / "model.safetensors"))
    out.mkdir(parents=True)
    changed, report = {}, {}
    n, m = map(int, pattern.split(":"))
    for name, w in weights.items():
        if name.endswith(".weight") and any(f"mlp.{p}." in name for p in MLP_IN):
            changed[name] = w if lie else w.masked_fill(nm_mask(w.abs(), n, m), 0)
            report[name.removesuffix(".weight")] = {"pattern": pattern, "method": "magnitude", "sparsity": 0.5}
    save_file(changed, str(out / "weights.safetensors"))
    (out / "report.json").write_text(json.dumps({"modules": report}))
    return out


@pytest.fixture
def make_prune_artifact() -> Callable[..., Path]:
    return _make_prune_artifact


@pytest.fixture
def quantize_ctx(recipe, stage_ctx, tiny_model_dir) -> Callable[..., StageContext]:
    """``quantize_ctx(inputs)``: a quantize-stage context (FP8 W8A8) on the tiny Llama, in ``quantize-out``."""
    return lambda inputs: stage_ctx(recipe(**{"model.id": tiny_model_dir, "quantize.scheme": "fp8_w8a8"}),
                                    "quantize-out", inputs=inputs, model_identity="x")
