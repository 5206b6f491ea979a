"""Stage impact of a recipe change and the re-run cost estimate (no model, no stage run)."""

from __future__ import annotations

import pytest

from rac.recipe.diff import diff_recipes
from rac.workflow.review import (
    DECODE_TOK_S_7B,
    StageInfo,
    eval_tokens,
    gpu_hours,
    impact,
    params_billion,
    rerun_cost,
    rollout_tokens,
)

STAGES = (
    StageInfo("rollout", ("model", "calibration"), (), lambda r: r["calibration"]["kind"] == "rac"),
    StageInfo("prune", ("model", "prune"), ("rollout",), lambda r: bool(r.get("prune"))),
    StageInfo("quantize", ("quantize", "model"), ("prune",), lambda r: bool(r.get("quantize"))),
    StageInfo("evaluate", ("model", "evaluate"), ("prune", "quantize"), lambda r: True),
)
BASE = {"model": {"id": "org/Qwen-7B"}, "calibration": {"kind": "rac"}, "prune": {"sparsity": 0.5},
        "evaluate": {"tasks": []}}


def _impact(new: dict, old: dict = BASE):
    return impact(old, new, diff_recipes(old, new), STAGES)


def test_stages_neither_recipe_enables_are_never_listed():
    hit = _impact({**BASE, "model": {"id": "org/Qwen-14B"}})
    assert hit.invalidated == ["rollout", "prune", "evaluate"] == hit.rerun  # no quantize section anywhere
    hit = _impact({**BASE, "quantize": {"scheme": "fp8_w8a8"}})
    assert hit.invalidated == ["quantize", "evaluate"] == hit.rerun
    hit = _impact({**BASE, "prune": {"sparsity": 0.4}})
    assert hit.rerun == ["prune", "evaluate"]
    dense = {k: v for k, v in BASE.items() if k != "prune"}
    hit = _impact(dense)
    assert hit.invalidated == ["prune", "evaluate"] and hit.rerun == ["evaluate"]  # prune switched off
    assert _impact(BASE).rerun == []
    assert impact(None, BASE, [], STAGES).rerun == ["rollout", "prune", "evaluate"]  # a new recipe runs it all


def test_token_estimates():
    recipe = {"calibration": {"budget": {"tokens": 1_000_000}, "rollout": {"t_max": 8192}},
              "evaluate": {"max_new_tokens": 1000, "samples": 2,
                           "tasks": [{"name": "a", "type": "math", "limit": 10},
                                     {"name": "b", "type": "math", "limit": 5, "max_new_tokens": 100},
                                     {"name": "c", "type": "math", "dataset": "math500"}]}}
    assert rollout_tokens(recipe) == 1_000_000
    assert eval_tokens(recipe) == 10 * 2 * 1000 + 5 * 2 * 100 + 500 * 2 * 1000  # math500: 500 bundled problems
    prompts = {"calibration": {"budget": {"prompts": 100}, "rollout": {"t_max": 1000, "samples_per_prompt": 2}}}
    assert rollout_tokens(prompts) == 100 * 2 * 500  # half of t_max per trace
    unknown = {"evaluate": {"tasks": [{"name": "x", "type": "lm_eval", "task": "gsm8k"}]}}
    assert eval_tokens(unknown) is None


def test_gpu_hours_only_for_cuda_and_a_named_size():
    assert params_billion({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"}) == 14
    assert params_billion({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}) == 1.5
    assert params_billion({"id": "smollm2-135m"}) is None
    cuda = {"run": {"device": "cuda"}}
    assert gpu_hours(int(DECODE_TOK_S_7B * 3600), {"id": "x/Qwen-7B"}, cuda) == pytest.approx(1.0)
    assert gpu_hours(int(DECODE_TOK_S_7B * 3600), {"id": "x/Qwen-14B"}, cuda) == pytest.approx(2.0)
    assert gpu_hours(1000, {"id": "x/Qwen-7B"}, {"run": {"device": "cpu"}}) is None
    recipe = {**cuda, "model": {"id": "x/Qwen-7B"}, "calibration": {"budget": {"tokens": 10},
                                                                    "rollout": {"model": {"id": "x/Qwen-14B"}}}}
    cost = rerun_cost(recipe, ["rollout", "evaluate"])
    assert cost.rollout_tokens == 10 and cost.eval_tokens == 0
    assert cost.gpu_hours == pytest.approx(10 / (DECODE_TOK_S_7B / 2) / 3600)  # the 14B source generates
