"""Stage prune: scopes, sequential vs dense-input mode, Hessian reuse, methods and the report."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from rac.algorithms.masks import check_nm
from rac.engine.cache import Cache
from rac.engine.stage import StageContext
from rac.models.load import apply_weights, load_model
from rac.stages import hessian, prune

RECIPE = {
    "model": {"id": None, "dtype": "float32"},
    "calibration": {"kind": "prompt", "sources": [{"dataset": "gsm8k_train", "field": "question"}],
                    "budget": {"tokens": None, "prompts": 4}, "max_prompt_tokens": 512,
                    "render": {"chat_template": True, "system_prompt": None, "prefix": ""},
                    "weights": {"prompt": 1.0, "decode": 1.0}, "seed": 0},
    "prune": {"method": "sparsegpt", "sparsity": 0.5, "pattern": None, "block_size": 128, "dampening": 0.01,
              "mask_selection": "per_block", "sequential": True, "batch_size": 2},
}


def _save_tiny(path, arch, tokenizer, layers):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    kw = {"vocab_size": len(tokenizer), "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": layers,
              "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
              "pad_token_id": tokenizer.pad_token_id}
    model = LlamaForCausalLM(LlamaConfig(**kw)) if arch == "llama" else Qwen2ForCausalLM(Qwen2Config(**kw))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


class Runner:
    """Runs hessian + prune with one cache, like the engine does (one artifact dir per call)."""

    def __init__(self, tmp_path, model_id):
        self.tmp, self.cache, self.n = tmp_path, Cache(tmp_path / "cache"), 0
        self.hessian_dirs: dict = {}  # the engine reuses the hessian artifact when its reads match
        self.recipe = copy.deepcopy(RECIPE)
        self.recipe["model"]["id"] = model_id

    def ctx(self, recipe, inputs):
        self.n += 1
        out = self.tmp / f"out{self.n}"
        out.mkdir()
        return StageContext(recipe=recipe, out_dir=out, inputs=inputs, cache=self.cache, device="cpu",
                            model_identity="", run_dir=self.tmp)

    def run(self, **prune_overrides):
        recipe = copy.deepcopy(self.recipe)
        recipe["prune"].update(prune_overrides)
        reads = (recipe["prune"]["sequential"], recipe["prune"]["batch_size"])
        if reads not in self.hessian_dirs:
            h = self.ctx(recipe, {})
            hessian.run(h)
            self.hessian_dirs[reads] = h.out_dir
        p = self.ctx(recipe, {"hessian": self.hessian_dirs[reads]})
        summary = prune.run(p)
        report = json.loads((p.out_dir / "report.json").read_text())["modules"]
        return summary, load_file(str(p.out_dir / "weights.safetensors")), report, p.out_dir


@pytest.fixture(params=["llama", "qwen2"])
def three_blocks(request, tmp_path, tokenizer):
    return Runner(tmp_path, _save_tiny(tmp_path / "m3", request.param, tokenizer, 3))


@pytest.fixture()
def two_blocks(tmp_path, tiny_model_dir):
    return Runner(tmp_path, str(tiny_model_dir))


def test_scopes_prune_only_what_they_select(three_blocks):
    scopes = [{"name": "edges", "modules": ["mlp"], "blocks": "first_third", "pattern": "2:4"},
              {"name": "tail", "modules": ["mlp"], "blocks": "last_third", "pattern": "2:4"}]
    summary, weights, report, out = three_blocks.run(scopes=scopes)
    expected = {f"model.layers.{b}.mlp.{m}.weight" for b in (0, 2) for m in ("gate_proj", "up_proj", "down_proj")}
    assert set(weights) == expected and summary["modules"] == 6
    for name, w in weights.items():
        assert check_nm(w, 2, 4) and (w == 0).float().mean().item() == 0.5, name
    assert {r["scope"] for r in report} == {"edges", "tail"} and all(r["pattern"] == "2:4" for r in report)
    model, _ = load_model(three_blocks.recipe["model"], "cpu")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    apply_weights(model, out)
    after = model.state_dict()
    untouched = [k for k in before if k not in expected]
    assert all(torch.equal(before[k], after[k]) for k in untouched)
    assert all(0 < r["recon_error"] < 1 and r["achieved"] == 0.5 for r in report)


def test_sequential_vs_dense_inputs(two_blocks):
    _, seq, _, _ = two_blocks.run(sequential=True)
    _, dense, _, _ = two_blocks.run(sequential=False)
    assert set(seq) == set(dense) and len(seq) == 14
    for m in ("q_proj", "k_proj", "v_proj"):  # block 0's first group sees the same (dense) inputs
        assert torch.equal(seq[f"model.layers.0.self_attn.{m}.weight"], dense[f"model.layers.0.self_attn.{m}.weight"])
    assert not torch.equal(seq["model.layers.1.self_attn.q_proj.weight"], dense["model.layers.1.self_attn.q_proj.weight"])
    # within block 0, o_proj sees the pruned attention in sequential mode only
    assert not torch.equal(seq["model.layers.0.self_attn.o_proj.weight"], dense["model.layers.0.self_attn.o_proj.weight"])


def test_hessians_are_reused_exactly_when_valid(two_blocks):
    first, w1, _report1, _ = two_blocks.run()
    assert first["hessian_misses"] == 7 and first["hessian_hits"] == 1  # block 0 attn_in from the hessian stage
    again, w2, report2, _ = two_blocks.run()
    assert again["hessian_misses"] == 0 and again["hessian_hits"] == 8 and again["block_forward_passes"] == 0
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert all(r["hessian_hit"] for r in report2)
    other, _, report3, _ = two_blocks.run(sparsity=0.6)
    hits = {(r["block"], r["module"]) for r in report3 if r["hessian_hit"]}
    assert hits == {(0, "q_proj"), (0, "k_proj"), (0, "v_proj")} and other["hessian_misses"] == 7


def test_dense_mode_uses_the_hessian_stage_only(two_blocks):
    summary, _, _report, _ = two_blocks.run(sequential=False)
    assert summary["hessian_misses"] == 0 and summary["hessian_hits"] == 8
    assert summary["block_forward_passes"] == 0


def test_methods_and_outside_modules(two_blocks):
    scopes = [{"name": "a", "modules": ["attn"], "blocks": "all", "method": "wanda"},
              {"name": "m", "modules": ["mlp"], "blocks": [1], "method": "magnitude", "sparsity": 0.25},
              {"name": "head", "modules": ["lm_head"], "blocks": "all", "method": "magnitude", "sparsity": 0.1}]
    _summary, weights, report, _ = two_blocks.run(scopes=scopes)
    by = {(r["block"], r["module"]): r for r in report}
    assert by[(0, "q_proj")]["method"] == "wanda" and by[(0, "q_proj")]["achieved"] == 0.5
    assert by[(1, "down_proj")]["achieved"] == 0.25 and (0, "down_proj") not in by
    q = weights["model.layers.0.self_attn.q_proj.weight"]
    assert ((q == 0).sum(1) == q.shape[1] // 2).all()  # wanda compares within each output row
    head = [k for k in weights if "embed_tokens" in k or "lm_head" in k]
    assert len(head) == 1 and by[(-1, "lm_head")]["achieved"] == pytest.approx(0.1, abs=1e-3)
    bad = [{"name": "h", "modules": ["lm_head"], "blocks": "all", "method": "sparsegpt"}]
    with pytest.raises(ValueError, match="lm_head can only use method magnitude"):
        two_blocks.run(scopes=bad)


def test_sparsegpt_reconstructs_better_than_magnitude(two_blocks):
    _, _, gpt, _ = two_blocks.run(sequential=False)
    _, _, mag, _ = two_blocks.run(sequential=False, method="magnitude")
    for g, m in zip(gpt, mag):
        assert g["name"] == m["name"] and g["recon_error"] < m["recon_error"], g["name"]
