"""Export at scale: HF-sharded safetensors with an index, a hub model card and the rac_export.json sidecar."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from rac.models.model_card import SIDECAR, export_facts, model_card, recipe_digest, scope_summary
from rac.models.shards import INDEX, save_sharded
from rac.pipeline.stage import StageContext
from rac.stages import export


def _prune_artifact(model_dir: Path, out: Path) -> Path:
    """Half of every q_proj zeroed, with the report rows the prune stage writes."""
    from safetensors.torch import save_file

    weights = load_file(str(model_dir / "model.safetensors"))
    out.mkdir(parents=True)
    changed, rows = {}, []
    for key, w in weights.items():
        if key.endswith("q_proj.weight"):
            w = w.clone()
            w[:, : w.shape[1] // 2] = 0
            changed[key] = w
            rows.append({"block": int(key.split(".")[2]), "name": key.removesuffix(".weight"), "module": "q_proj",
                         "scope": "attn-q", "method": "sparsegpt", "sparsity": 0.5, "pattern": None,
                         "achieved": 0.5})
    save_file(changed, str(out / "weights.safetensors"))
    (out / "report.json").write_text(json.dumps({"modules": rows}))
    return out


@pytest.fixture()
def card_ctx(recipe, stage_ctx, tiny_model_dir) -> Callable[..., StageContext]:
    """``card_ctx(inputs, **export)``: an export context (HF format, model card) of a RAC-calibrated 50% prune."""
    def build(inputs: dict, **export_cfg) -> StageContext:
        data = recipe(**{"model.id": tiny_model_dir, "calibration": {
            "kind": "rac", "sources": [{"dataset": "gsm8k_train"}], "budget": {"tokens": 4096},
            "rollout": {"t_max": 256}}, "prune": {"method": "sparsegpt", "sparsity": 0.5},
            "export": {"format": "hf", "max_shard_size": "5GB", "model_card": True, **export_cfg}})
        return stage_ctx(data, "export-out", inputs=inputs, model_identity="x")

    return build


def test_hf_export_is_sharded_with_an_index_and_reloads(tiny_model_dir, tmp_path, card_ctx):
    from transformers import AutoModelForCausalLM

    prune = _prune_artifact(tiny_model_dir, tmp_path / "prune")
    ctx = card_ctx({"prune": prune}, max_shard_size="100KB")
    summary = export.STAGE.run(ctx)
    assert len(summary["files"]) > 1 and (ctx.out_dir / INDEX).is_file()
    index = json.loads((ctx.out_dir / INDEX).read_text())
    assert set(index["weight_map"].values()) == set(summary["files"])
    state = AutoModelForCausalLM.from_pretrained(ctx.out_dir).state_dict()
    for name, w in load_file(str(prune / "weights.safetensors")).items():
        assert torch.equal(state[name], w)


def test_save_sharded_splits_and_indexes(tmp_path):
    state = {f"t{i}": torch.full((1000,), float(i)) for i in range(5)}
    files = save_sharded(state, tmp_path, max_shard_size="8KB")
    index = json.loads((tmp_path / INDEX).read_text())
    assert len(files) == 3 and index["metadata"]["total_size"] == 5 * 4000  # two 4 kB tensors fit in 8 kB
    back = {k: load_file(str(tmp_path / f))[k] for k, f in index["weight_map"].items()}
    assert all(torch.equal(back[k], v) for k, v in state.items())
    one = tmp_path / "one"
    one.mkdir()
    assert save_sharded(state, one, max_shard_size="5GB") == ["model.safetensors"] and not (one / INDEX).exists()


def test_model_card_and_sidecar(tiny_model_dir, tmp_path, card_ctx):
    prune = _prune_artifact(tiny_model_dir, tmp_path / "prune")
    evaluate = tmp_path / "evaluate"
    evaluate.mkdir()
    (evaluate / "metrics.json").write_text(json.dumps({"gsm8k": {"type": "math", "accuracy": 0.25,
                                                                 "accuracy_se": 0.1, "status": "ok"}}))
    ctx = card_ctx({"prune": prune, "evaluate": evaluate})
    export.STAGE.run(ctx)
    facts = json.loads((ctx.out_dir / SIDECAR).read_text())
    assert facts["recipe_sha256"] == recipe_digest(facts["recipe"]) and facts["recipe"]["prune"]["sparsity"] == 0.5
    assert facts["metrics"] == {"gsm8k": {"accuracy": 0.25, "accuracy_se": 0.1}}
    (scope,) = facts["pruning"]
    assert scope["scope"] == "attn-q" and scope["achieved_sparsity"] == 0.5 and scope["blocks"] == "0-1"
    card = (ctx.out_dir / "README.md").read_text()
    front = yaml.safe_load(card.split("---")[1])
    assert "pruned" in front["tags"] and "base_model" not in front  # a local folder is no hub id
    assert "| attn-q | sparsegpt | 0.5 | 0-1 | 2 | 0.5 |" in card and "| gsm8k | accuracy | 0.25 |" in card


def test_card_front_matter_for_a_hub_model_with_fp8(recipe):
    data = recipe(**{"model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "revision": "abc123"},
                     "calibration": {"kind": "rac", "sources": [{"path": "hf:open-r1/OpenR1-Math-220k", "field": "problem"}],
                                     "rollout": {"t_max": 8192,
                                                 "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"}}},
                     "prune": {"method": "sparsegpt"}, "quantize": {"scheme": "fp8_w8a8", "ignore": ["lm_head"]}})
    report = [{"block": b, "name": f"model.layers.{b}.mlp.up_proj", "scope": "mlp24", "method": "sparsegpt",
               "sparsity": None, "pattern": "2:4", "achieved": 0.5} for b in range(3)]
    facts = export_facts(data, report, {}, None, "compressed-tensors")
    card = model_card(facts)
    front = yaml.safe_load(card.split("---")[1])
    assert front["base_model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"
    assert front["base_model_relation"] == "quantized" and "fp8" in front["tags"]
    assert "semi-structured-sparsity" in front["tags"]
    assert "DeepSeek-R1-Distill-Qwen-14B` (off-policy)" in card and "revision `abc123`" in card


@pytest.mark.parametrize("sizes, expected", [({"a": 100, "b": 300}, 0.6875), ({}, 0.5)])
def test_scope_sparsity_is_weighted_by_module_size(sizes, expected):
    rows = [{"block": 0, "name": "a", "scope": "s", "method": "wanda", "sparsity": 0.5, "pattern": None,
             "achieved": 0.5}, {"block": 1, "name": "b", "scope": "s", "method": "wanda", "sparsity": 0.5,
                                "pattern": None, "achieved": 0.75 if sizes else 0.5}]
    assert scope_summary(rows, sizes)[0]["achieved_sparsity"] == expected
