"""Stage `export`: HF folder reloads with identical weights; FP8 compressed-tensors round-trips."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
from safetensors.torch import load_file

from rac.algorithms.fp8 import dequantize_fp8
from rac.pipeline.stage import StageContext
from rac.recipe import RecipeError
from rac.stages import export, quantize
from rac.stages.export import ExportError


@pytest.fixture()
def export_ctx(recipe, stage_ctx, tiny_model_dir) -> Callable[..., StageContext]:
    """``export_ctx(inputs, fmt, **overrides)``: an export-stage context on the tiny Llama."""
    return lambda inputs, fmt, **overrides: stage_ctx(
        recipe(**{"model.id": tiny_model_dir, "export.format": fmt, **overrides}), inputs=inputs, model_identity="x")


def test_hf_export_reloads_identical(tiny_model_dir, tmp_path, make_prune_artifact, export_ctx):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    prune = make_prune_artifact(tiny_model_dir, tmp_path / "prune")
    ctx = export_ctx({"prune": prune}, "hf")
    summary = export.STAGE.run(ctx)
    assert summary["format"] == "hf"
    for f in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json"):
        assert (ctx.out_dir / f).is_file(), f
    model = AutoModelForCausalLM.from_pretrained(ctx.out_dir)
    tok = AutoTokenizer.from_pretrained(ctx.out_dir)
    assert tok.chat_template
    state = model.state_dict()
    for name, w in load_file(str(prune / "weights.safetensors")).items():
        assert torch.equal(state[name], w)
    original = load_file(str(tiny_model_dir / "model.safetensors"))
    assert torch.equal(state["model.layers.0.self_attn.q_proj.weight"], original["model.layers.0.self_attn.q_proj.weight"])


def test_fp8_compressed_tensors_roundtrip(tiny_model_dir, tmp_path, make_prune_artifact, quantize_ctx, export_ctx):
    pytest.importorskip("compressed_tensors", reason="needs the export extra: pip install 'rac[export]'")
    from transformers import AutoModelForCausalLM
    from transformers.utils.quantization_config import CompressedTensorsConfig

    prune = make_prune_artifact(tiny_model_dir, tmp_path / "prune")
    qctx = quantize_ctx({"prune": prune})
    quantize.STAGE.run(qctx)
    ctx = export_ctx({"prune": prune, "quantize": qctx.out_dir}, "compressed-tensors", **{"quantize.scheme": "fp8_w8a8"})
    summary = export.STAGE.run(ctx)
    assert summary["quantized_modules"] == 14
    config = json.loads((ctx.out_dir / "config.json").read_text())
    qc = config["quantization_config"]
    assert qc["quant_method"] == "compressed-tensors" and qc["format"] == "float-quantized"
    group = qc["config_groups"]["group_0"]
    assert group["weights"]["strategy"] == "channel" and not group["weights"]["dynamic"]
    assert group["input_activations"]["strategy"] == "token" and group["input_activations"]["dynamic"]
    assert "lm_head" in qc["ignore"]
    stored = load_file(str(ctx.out_dir / "model.safetensors"))
    assert stored["model.layers.0.mlp.up_proj.weight"].dtype == torch.float8_e4m3fn

    # compressed-tensors' own loader (through transformers' quantizer), decompressing to dense
    model = AutoModelForCausalLM.from_pretrained(
        ctx.out_dir, quantization_config=CompressedTensorsConfig(run_compressed=False)
    )
    fp8 = load_file(str(qctx.out_dir / "weights.safetensors"))
    state = model.state_dict()
    name = "model.layers.1.mlp.gate_proj"
    expected = dequantize_fp8(fp8[f"{name}.weight"], fp8[f"{name}.weight_scale"])
    torch.testing.assert_close(state[f"{name}.weight"].float(), expected, rtol=0, atol=0)
    assert (state[f"{name}.weight"] == 0).float().mean() == pytest.approx(0.5)
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert torch.isfinite(logits).all()


def test_export_format_errors(tmp_path, recipe, export_ctx):
    with pytest.raises(ExportError, match="compressed-tensors"):
        export.STAGE.run(export_ctx({"quantize": tmp_path}, "hf"))
    with pytest.raises(RecipeError, match=r"recipe-\d+\.yaml:\d+:\d+: \$\.export\.format: 'gguf' is not one of"):
        recipe(**{"model.id": "m", "export.format": "gguf"})
