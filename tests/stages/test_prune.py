"""Stage prune: scopes, sequential vs dense-input mode, Hessian reuse, methods and the report."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file

from rac.algorithms.masks import check_nm
from rac.algorithms.prune_group import recon_errors
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
        reads = (recipe["prune"]["sequential"], recipe["prune"].get("true_sequential", True), recipe["prune"]["batch_size"])
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
    _, seq, _, _ = two_blocks.run(sequential=True, true_sequential=False)
    _, true_seq, _, _ = two_blocks.run(sequential=True)  # the default order
    _, dense, _, _ = two_blocks.run(sequential=False)
    assert set(seq) == set(dense) == set(true_seq) and len(seq) == 14
    block0 = [k for k in seq if ".layers.0." in k]
    # one-pass order: every Hessian of block 0 comes from one dense pass, so block 0 matches dense mode
    assert len(block0) == 7 and all(torch.equal(seq[k], dense[k]) for k in block0)
    assert not torch.equal(seq["model.layers.1.self_attn.q_proj.weight"], dense["model.layers.1.self_attn.q_proj.weight"])
    for m in ("q_proj", "k_proj", "v_proj"):  # block 0's first group sees the same (dense) inputs
        name = f"model.layers.0.self_attn.{m}.weight"
        assert torch.equal(true_seq[name], dense[name])
    # true sequential: within block 0, o_proj and down_proj see the pruned layers feeding them
    for name in ("model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.down_proj.weight"):
        assert not torch.equal(true_seq[name], dense[name]) and torch.equal(seq[name], dense[name])


def test_one_pass_order_replays_each_block_twice_and_the_default_once(two_blocks):
    summary, _, _, _ = two_blocks.run(true_sequential=False)
    # block 0: all four Hessians from the hessian stage; block 1: one pass collects all four, and the
    # walker runs the pruned block 0 once to produce block 1's inputs
    assert summary["hessian_passes"] == 1 and summary["block_forward_passes"] == 1
    assert summary["true_sequential"] is False
    staged, _, _, _ = two_blocks.run()
    # true sequential (default): one staged pass per block produces its four Hessians and its outputs
    assert staged["true_sequential"] is True
    assert staged["hessian_passes"] == 2 and staged["block_forward_passes"] == 0


def test_staged_true_sequential_equals_plain_replays(two_blocks, monkeypatch):
    from rac.models import staged

    two_blocks.recipe["prune"]["keep_hessians"] = "all"  # the second half checks the stored Hessians' keys
    fast, w_fast, report_fast, _ = two_blocks.run(true_sequential=True)
    two_blocks.cache = Cache(two_blocks.tmp / "cache2")  # no Hessian reuse between the two
    two_blocks.hessian_dirs.clear()
    monkeypatch.setattr(staged, "verify_layout", lambda *args: None)  # as for a block it cannot handle
    slow, w_slow, report_slow, _ = two_blocks.run(true_sequential=True)
    assert slow["hessian_passes"] == 7 and slow["block_forward_passes"] == 1  # one pass per group, minus attn_in of block 0
    assert set(w_fast) == set(w_slow) and len(w_fast) == 14
    for name in w_fast:
        assert torch.equal(w_fast[name] == 0, w_slow[name] == 0), name  # the same masks
        assert torch.allclose(w_fast[name], w_slow[name], atol=1e-5), name
    errors = lambda report: [r["recon_error"] for r in report]  # noqa: E731
    assert errors(report_fast) == pytest.approx(errors(report_slow), rel=1e-4)
    # the same Hessian keys: the staged run's cache serves the plain run completely
    two_blocks.cache = Cache(two_blocks.tmp / "cache")
    again, _, _, _ = two_blocks.run(true_sequential=True)
    assert again["hessian_misses"] == 0 and again["hessian_hits"] == 8


@pytest.mark.parametrize("true_sequential", [False, True])
def test_hessians_are_reused_exactly_when_valid(two_blocks, true_sequential):
    two_blocks.recipe["prune"]["keep_hessians"] = "all"
    first, w1, _report1, _ = two_blocks.run(true_sequential=true_sequential)
    exact = 1 if true_sequential else 4  # block 0 Hessians from the hessian stage that stay valid
    assert first["hessian_misses"] == 8 - exact and first["hessian_hits"] == exact
    again, w2, report2, _ = two_blocks.run(true_sequential=true_sequential)
    assert again["hessian_misses"] == 0 and again["hessian_hits"] == 8 and again["block_forward_passes"] == 0
    assert again["hessian_passes"] == 0
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    assert all(r["hessian_hit"] for r in report2)
    other, _, report3, _ = two_blocks.run(sparsity=0.6, true_sequential=true_sequential)
    hits = {(r["block"], r["module"]) for r in report3 if r["hessian_hit"]}
    dense_inputs = {"q_proj", "k_proj", "v_proj"} if true_sequential else \
        {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert hits == {(0, m) for m in dense_inputs} and other["hessian_misses"] == 8 - exact
    # the other within-block order never reuses a Hessian downstream of a pruned module
    flipped, w3, _, _ = two_blocks.run(true_sequential=not true_sequential)
    expected = (4, 4) if true_sequential else (1, 7)  # (hits, misses): only dense-input Hessians are shared
    assert (flipped["hessian_hits"], flipped["hessian_misses"]) == expected
    assert not torch.equal(w1["model.layers.1.mlp.down_proj.weight"], w3["model.layers.1.mlp.down_proj.weight"])


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


def test_true_sequential_must_be_boolean(two_blocks):
    with pytest.raises(ValueError, match="prune.true_sequential"):
        two_blocks.run(true_sequential="yes")


def test_recon_errors_match_the_direct_formula():
    torch.manual_seed(0)
    X = torch.randn(300, 48) @ torch.randn(48, 48)
    H = X.T @ X / 300
    originals = [torch.randn(40, 48), torch.randn(8, 48)]
    pruned = [w * (torch.rand_like(w) > 0.5) for w in originals]
    pruned[1][3] = originals[1][3]  # an unchanged row
    got = recon_errors(originals, pruned, H)
    for w, q, e in zip(originals, pruned, got):
        direct = float(((w - q).double() @ X.T.double()).square().sum() / (w.double() @ X.T.double()).square().sum())
        assert e == pytest.approx(direct, rel=1e-4)
    assert recon_errors([originals[0]], [originals[0]], H) == [0.0]


def test_sparsegpt_reconstructs_better_than_magnitude(two_blocks):
    _, _, gpt, _ = two_blocks.run(sequential=False)
    _, _, mag, _ = two_blocks.run(sequential=False, method="magnitude")
    for g, m in zip(gpt, mag):
        assert g["name"] == m["name"] and g["recon_error"] < m["recon_error"], g["name"]


def test_alps_through_the_prune_stage(two_blocks):
    """prune.method: alps runs through the same scopes and patterns as SparseGPT, with a lower layer error."""
    scopes = [{"name": "mlp24", "modules": ["mlp"], "blocks": "all", "pattern": "2:4"},
              {"name": "attn", "modules": ["attn"], "blocks": "all"}]
    _, weights, alps, _ = two_blocks.run(sequential=False, method="alps", scopes=scopes)
    _, _, gpt, _ = two_blocks.run(sequential=False, scopes=scopes)
    assert {r["method"] for r in alps} == {"alps"}
    assert check_nm(weights["model.layers.0.mlp.down_proj.weight"], 2, 4)
    assert sum(r["recon_error"] for r in alps) < sum(r["recon_error"] for r in gpt)


@pytest.mark.parametrize("true_sequential", [False, True])
def test_keep_hessians_reusable_keeps_only_block0_across_a_sparsity_grid(two_blocks, true_sequential):
    """The default keeps what another configuration can reuse: Hessians with nothing pruned upstream."""
    from rac.calibration.hessian_store import HESSIAN_KIND

    first, w1, _, _ = two_blocks.run(true_sequential=true_sequential)
    second, _, report, _ = two_blocks.run(sparsity=0.6, true_sequential=true_sequential)
    metas = [json.loads(p.read_text())["meta"] for p in (two_blocks.cache.root / "blobs" / HESSIAN_KIND).glob("*.json")]
    assert metas and {m["block"] for m in metas} == {0}
    assert len(metas) == (1 if true_sequential else 4) and first["hessians_not_kept"] > 0
    assert {(r["block"], r["module"]) for r in report if r["hessian_hit"]} <= {(0, m) for m in (
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")}
    again, w2, _, _ = two_blocks.run(true_sequential=true_sequential)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)  # recomputed, same result


@pytest.mark.parametrize("storage", ["float32-upper", "bfloat16-upper"])
def test_packed_hessian_storage_gives_the_same_weights_on_a_hit(two_blocks, storage):
    two_blocks.recipe["prune"].update(keep_hessians="all", hessian_storage=storage)
    first, w1, _, _ = two_blocks.run()
    again, w2, _, _ = two_blocks.run()
    assert again["hessian_misses"] == 0 and first["hessian_misses"] > 0
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
