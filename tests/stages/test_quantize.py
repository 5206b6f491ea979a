"""Stage `quantize` on the tiny model: FP8 artifact, zeros and N:M preserved, overlay by apply_weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from rac.algorithms.masks import check_nm
from rac.models.fp8_linear import Fp8Linear
from rac.recipe import RecipeError
from rac.stages import quantize
from rac.stages.quantize import QuantizeError, pruned_patterns, target_modules


def test_quantize_stage_keeps_sparsity(tiny_model_dir, tmp_path, make_prune_artifact, quantize_ctx):
    prune = make_prune_artifact(tiny_model_dir, tmp_path / "prune")
    ctx = quantize_ctx({"prune": prune})
    summary = quantize.STAGE.run(ctx)
    assert summary["modules"] == 14 and summary["nm_checked"] == 4 and summary["max_rel_error"] < 0.05
    tensors = load_file(str(ctx.out_dir / "weights.safetensors"))
    assert not any(k.startswith("lm_head") for k in tensors)
    pruned = load_file(str(prune / "weights.safetensors"))
    for name, w in pruned.items():
        q = tensors[name]
        assert q.dtype == torch.float8_e4m3fn and tensors[name + "_scale"].shape == (w.shape[0], 1)
        assert (q.float()[w == 0] == 0).all() and check_nm(q.float(), 2, 4)
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert report["modules"]["model.layers.0.mlp.up_proj"]["pattern"] == "2:4"
    assert report["modules"]["model.layers.0.mlp.up_proj"]["sparsity"] == pytest.approx(0.5)

    from rac.models.load import apply_weights, load_model

    model, _ = load_model({"id": str(tiny_model_dir)}, "cpu")
    dense_logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    apply_weights(model, prune, ctx.out_dir)
    assert isinstance(model.model.layers[1].mlp.down_proj, Fp8Linear)
    assert not isinstance(model.lm_head, Fp8Linear)
    logits = model(torch.tensor([[1, 2, 3, 4]])).logits
    assert torch.isfinite(logits).all() and logits.shape == dense_logits.shape


def test_quantize_detects_broken_pattern(tiny_model_dir, tmp_path, make_prune_artifact, quantize_ctx):
    prune = make_prune_artifact(tiny_model_dir, tmp_path / "prune", lie=True)  # report says 2:4, weights dense
    with pytest.raises(QuantizeError, match="N:M pattern 2:4"):
        quantize.STAGE.run(quantize_ctx({"prune": prune}))


def test_targets_and_ignore(tiny_llama, tmp_path):
    model, _ = tiny_llama
    assert len(target_modules(model, ["attn", "mlp"], ["lm_head"])) == 14
    assert target_modules(model, ["mlp"], ["down_proj", "model.layers.1.*"]) == [
        "model.layers.0.mlp.gate_proj",
        "model.layers.0.mlp.up_proj",
    ]
    assert target_modules(model, ["attn", "lm_head"], [])[-1] == "lm_head"
    (tmp_path / "report.json").write_text("{bad")
    with pytest.raises(QuantizeError, match="report.json"):
        pruned_patterns(tmp_path)


def test_bad_scheme(recipe):
    with pytest.raises(RecipeError, match=r"recipe-1\.yaml:\d+:\d+: \$\.quantize\.scheme: 'int4' is not one of"):
        recipe(**{"model.id": "m", "quantize.scheme": "int4"})
    assert quantize.STAGE.enabled(recipe(**{"model.id": "m", "quantize.scheme": "fp8_w8a8"}))
    assert not quantize.STAGE.enabled(recipe(**{"model.id": "m"}))
