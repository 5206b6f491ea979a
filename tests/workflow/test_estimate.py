"""The per-stage estimator: pure arithmetic over the recipe and model shapes (no torch, no model)."""

from __future__ import annotations

import copy

import pytest

from rac.models.facts import LinearShape, ModelFacts
from rac.recipe.schema import fill_defaults
from rac.workflow.estimate import (
    HESSIAN_BYTES,
    estimate_stages,
    evaluate_tokens,
    fmt_bytes,
    rollout_prompts,
)

# DeepSeek-R1-Distill-Qwen-7B's shapes (hidden 3584, MLP 18944, 28 blocks, 4 KV heads of 128)
H, MLP, N = 3584, 18944, 28
LINEARS = (LinearShape("q_proj", "attn_in", H, H), LinearShape("k_proj", "attn_in", H, 512),
           LinearShape("v_proj", "attn_in", H, 512), LinearShape("o_proj", "attn_out", H, H),
           LinearShape("gate_proj", "mlp_in", H, MLP), LinearShape("up_proj", "mlp_in", H, MLP),
           LinearShape("down_proj", "mlp_out", MLP, H))
FACTS = ModelFacts(model_id="qwen-7b-like", source="test", architecture="Qwen2ForCausalLM", n_blocks=N,
                   hidden_size=H, vocab_size=152064, n_kv_heads=4, head_dim=128, params=7_615_616_512,
                   block_linears=LINEARS, outside=(LinearShape("lm_head", "", H, 152064),
                                                   LinearShape("embed_tokens", "", H, 152064)))
PER_BLOCK_HESSIANS = (3 * H * H + MLP * MLP) * HESSIAN_BYTES  # attn_in, attn_out, mlp_in (all 3584 wide), mlp_out


def recipe(**sections) -> dict:
    base = {"version": 1, "model": {"id": "x", "dtype": "bfloat16"},
            "calibration": {"kind": "rac", "budget": {"tokens": 1_000_000}, "max_prompt_tokens": 1024,
                            "sources": [{"dataset": "math_train"}], "rollout": {"t_max": 8192}},
            "prune": {"sparsity": 0.5},
            "evaluate": {"max_new_tokens": 32768, "tasks": [{"name": "math500", "type": "math", "dataset": "math500"}]}}
    for key, value in sections.items():
        if value is None:
            base.pop(key, None)
        else:
            base[key] = {**base.get(key, {}), **value}
    return fill_defaults(base)


def by_stage(r: dict, facts=FACTS, **kw) -> dict:
    stages = [s for s in ("rollout", "hessian", "prune", "quantize", "evaluate", "export")
              if s in ("hessian", "export") or r.get(s) or (s == "rollout" and r["calibration"]["kind"] == "rac")]
    return {e.stage: e for e in estimate_stages(r, stages, facts, **kw)}


def test_hessian_store_of_a_7b_cell():
    prune = by_stage(recipe(prune={"sparsity": 0.5, "keep_hessians": "all"}))["prune"]
    pruned_weights = N * sum(lin.in_features * lin.out_features for lin in LINEARS) * 2  # bfloat16
    assert prune.disk == N * PER_BLOCK_HESSIANS + pruned_weights
    assert N * PER_BLOCK_HESSIANS == pytest.approx(44.5e9, rel=0.01)  # the "about 45 GB per 7B cell"
    assert "28 block(s) x 1.6 GB computed, 44.5 GB kept in the cache (keep_hessians: all)" in prune.notes[0]


def test_keep_hessians_policy():
    r = recipe()  # the default, reusable: only Hessians with nothing pruned upstream
    weights = by_stage(recipe(prune={"keep_hessians": "all"}))["prune"].disk - N * PER_BLOCK_HESSIANS
    assert by_stage(r)["prune"].disk == H * H * HESSIAN_BYTES + weights  # true-sequential: block 0's attn_in
    r["prune"]["true_sequential"] = False
    assert by_stage(r)["prune"].disk == PER_BLOCK_HESSIANS + weights  # one-pass order: block 0's four groups
    assert PER_BLOCK_HESSIANS < 2e9  # under 2 GB for one 7B cell either way
    r["prune"]["keep_hessians"] = "none"
    assert by_stage(r)["prune"].disk == weights
    r["prune"].update(keep_hessians="all", hessian_storage="bfloat16-upper")
    packed = 3 * (H * (H + 1) // 2) * 2 + MLP * (MLP + 1) // 2 * 2
    assert by_stage(r)["prune"].disk == N * packed + weights


def test_scoped_pruning_stores_only_the_groups_it_prunes():
    scopes = [{"name": "mlp-first", "modules": ["mlp"], "blocks": "first_third", "pattern": "2:4"}]
    prune = by_stage(recipe(prune={"scopes": scopes, "keep_hessians": "all"}))["prune"]
    blocks = N // 3
    hessians = blocks * (H * H + MLP * MLP) * HESSIAN_BYTES  # mlp_in and mlp_out only
    weights = blocks * (2 * H * MLP + MLP * H) * 2
    assert prune.disk == hessians + weights


def test_magnitude_pruning_needs_no_hessians():
    prune = by_stage(recipe(prune={"method": "magnitude"}))["prune"]
    assert prune.disk == N * sum(lin.in_features * lin.out_features for lin in LINEARS) * 2


def test_rollout_tokens_prompts_times_t_max_times_samples():
    r = recipe(calibration={"budget": {"tokens": None, "prompts": 300},
                            "rollout": {"t_max": 8192, "samples_per_prompt": 2}})
    assert rollout_prompts(r["calibration"]) == (300, True)
    assert by_stage(r)["rollout"].tokens == 300 * 8192 * 2
    # a token budget gives the rollout stage's first-round estimate (completions of t_max / 2)
    prompts, exact = rollout_prompts(recipe()["calibration"])
    assert not exact and prompts == -(-1_000_000 // (128 + 4096))


def test_evaluate_tokens_problems_times_budget_times_samples():
    r = recipe(evaluate={"samples": 4, "tasks": [
        {"name": "math500", "type": "math", "dataset": "math500"},
        {"name": "gsm", "type": "math", "dataset": "gsm8k_test", "limit": 50, "max_new_tokens": 1000},
        {"name": "probe", "type": "probe", "dataset": "gsm8k_test", "limit": 16, "t_max": 256},
        {"name": "arc", "type": "lm_eval", "task": "arc_easy"}]})
    tokens, notes = evaluate_tokens(r, {"math500": 500, "gsm8k_test": 1319})
    assert tokens == 500 * 32768 * 4 + 50 * 1000 * 4 + 16 * 256
    assert notes == ["task arc: size unknown here (set limit to count it)"]


def test_memory_hf_engine_counts_the_full_kv_batch_and_vllm_its_minimum():
    hf = recipe(calibration={"rollout": {"engine": "hf", "batch_size": 4, "t_max": 8192}})
    kv_per_token = 2 * N * 4 * 128 * 2
    assert by_stage(hf)["rollout"].memory == FACTS.params * 2 + 4 * (1024 + 8192) * kv_per_token
    vllm = recipe(calibration={"rollout": {"engine": "vllm", "batch_size": 256, "t_max": 8192,
                                           "vllm": {"max_model_len": 10240, "tensor_parallel_size": 2}}})
    estimate = by_stage(vllm)["rollout"]
    assert estimate.memory == (FACTS.params * 2 + (1024 + 8192) * kv_per_token) // 2
    assert "all 256 sequences at full length at once would take" in estimate.notes[-1]


def test_fp8_evaluation_holds_two_copies():
    plain = by_stage(recipe())["evaluate"].memory
    fp8 = by_stage(recipe(quantize={"scheme": "fp8_w8a8"}, export={"format": "compressed-tensors"}))
    assert fp8["evaluate"].memory - plain == FACTS.params * 2
    linear = N * sum(lin.in_features * lin.out_features for lin in LINEARS)
    assert fp8["export"].disk == linear + (FACTS.params - linear) * 2


def test_unknown_shapes_still_count_tokens_and_calibration_disk():
    out = by_stage(recipe(), facts=None)
    assert out["rollout"].memory is None and out["rollout"].tokens > 0
    assert out["hessian"].disk == 1_000_000 * 9
    assert out["prune"].memory is None and out["prune"].disk is None


def test_estimator_does_not_mutate_the_recipe():
    r = recipe()
    before = copy.deepcopy(r)
    by_stage(r)
    assert r == before


def test_fmt_bytes():
    assert fmt_bytes(None) == "?"
    assert fmt_bytes(1_430_000_000) == "1.4 GB"
    assert fmt_bytes(512) == "512 B"
