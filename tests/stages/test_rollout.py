"""Rollout stage: a valid artifact through a real StageContext, budget top-up, drops, summary."""

from __future__ import annotations

import json

import pytest

from rac.calibration.mix import build_calibration_set
from rac.calibration.render import render_prompt
from rac.calibration.rollouts import read_rollouts
from rac.recipe import RecipeError
from rac.stages.rollout import STAGE, summarize_rollouts


@pytest.fixture()
def recipe_for(recipe):
    """``recipe_for(model_dir, tokens=400, prompts=None, **rollout)``: a RAC calibration recipe, 8-token rollouts."""
    def build(model_dir, tokens=400, prompts=None, **rollout):
        return recipe(**{"model.id": model_dir, "calibration": {
            "kind": "rac", "sources": [{"dataset": "gsm8k_train"}], "budget": {"tokens": tokens, "prompts": prompts},
            "max_prompt_tokens": 512, "seed": 0,
            "rollout": {"engine": "hf", "t_max": 8, "temperature": 0.6, "top_p": 0.95, "batch_size": 8, **rollout}}})

    return build


class Recorder:
    def __init__(self):
        self.advanced = 0

    def task(self, description, total):
        recorder = self

        class Handle:
            def advance(self, n=1):
                recorder.advanced += n

            def close(self):
                pass

        return Handle()


@pytest.fixture()
def run_stage(stage_ctx):
    """``run_stage(recipe, name=None)``: (out dir, summary, context) of one rollout-stage run."""
    def run(recipe, name=None):
        ctx = stage_ctx(recipe, name, model_identity="tiny-identity", progress=Recorder())
        return ctx.out_dir, STAGE.run(ctx), ctx

    return run


def test_stage_contract(recipe):
    assert STAGE.name == "rollout" and STAGE.needs == ()
    assert "calibration.rollout" in STAGE.reads and "model" in STAGE.reads
    pruned = {"model.id": "m", "prune": {"sparsity": 0.5}}
    assert STAGE.enabled(recipe(**pruned, **{"calibration.kind": "rac"}))
    assert not STAGE.enabled(recipe(**pruned, **{"calibration.kind": "prompt"}))
    assert not STAGE.enabled(recipe(**{"model.id": "m", "calibration.kind": "rac"}))  # dense: nothing consumes rollouts


def test_rollout_artifact_is_valid_and_fills_the_budget(recipe_for, run_stage, tiny_model_dir, tokenizer):
    recipe = recipe_for(tiny_model_dir, tokens=400)
    out, summary, ctx = run_stage(recipe)
    assert {p.name for p in out.iterdir()} == {"rollouts.jsonl", "tokens.safetensors", "provenance.json"}
    rollouts = read_rollouts(out)
    kept_tokens = sum(len(rollouts.prompt_of(k)) + len(rollouts.completion_ids[k]) for k in rollouts.kept())
    assert kept_tokens >= 400  # budget covered (top-up rounds if the first estimate fell short)
    assert summary["rollouts"] == len(rollouts.records) == len(rollouts.prompt_ids)
    assert ctx.progress.advanced == len(rollouts.records)
    for k, record in enumerate(rollouts.records):
        assert rollouts.prompt_of(k) == render_prompt(tokenizer, record["problem"], recipe["calibration"]["render"])
        assert record["finish_reason"] in ("stop", "length") and record["completion_len"] <= 8
        assert isinstance(record["correct"], bool)  # gsm8k has reference answers
    provenance = json.loads((out / "provenance.json").read_text())
    assert provenance["model_identity"] == "tiny-identity" and provenance["on_policy"] is True
    assert provenance["engine"] == "hf" and "transformers" in provenance["engine_version"]
    assert provenance["sampling"]["max_new_tokens"] == 8 and provenance["seed"] == 0
    calib = build_calibration_set(recipe["calibration"], tokenizer, rollout_dir=out)
    assert calib.stats["total_tokens"] <= 400 and calib.stats["decode_tokens"] > 0
    # a second run with the same settings generates exactly the same tokens
    out2, _, _ = run_stage(recipe, name="again")
    assert read_rollouts(out2).completion_ids == rollouts.completion_ids


def test_drop_truncated_and_filter_correct_mark_rollouts(recipe_for, run_stage, tiny_model_dir):
    out, summary, _ = run_stage(recipe_for(tiny_model_dir, tokens=None, prompts=2, t_max=2,
                                                     on_truncated="drop", samples_per_prompt=2))
    rollouts = read_rollouts(out)
    truncated = [r for r in rollouts.records if r["finish_reason"] == "length"]
    assert truncated and all(r["dropped"] == "truncated" for r in truncated)
    assert summary["dropped"]["truncated"] == len(truncated)
    assert len(rollouts.records) > 4  # top-up rounds tried more prompts after the drops
    out, summary, _ = run_stage(recipe_for(tiny_model_dir, tokens=None, prompts=2, filter_correct=True),
                                name="filtered")
    records = read_rollouts(out).records
    assert all(r["dropped"] in ("incorrect", None) for r in records)
    assert all(r["dropped"] is None for r in records if r["correct"])


def test_summarize_rollouts(recipe_for, run_stage, tiny_model_dir):
    out, _, _ = run_stage(recipe_for(tiny_model_dir, tokens=None, prompts=4))
    summary = summarize_rollouts(out, n_samples=2)
    assert summary["rollouts"] == 4 and len(summary["samples"]) == 2
    assert summary["samples"][0]["problem"] and set(summary["completion_len"]) == {"mean", "median", "p90", "max"}
    assert summary["completion_len"]["max"] <= 8 and sum(summary["finish_reasons"].values()) == 4
    assert summary["provenance"]["engine"] == "hf"


def test_bad_engine_name_fails_clearly(recipe_for, tiny_model_dir):
    with pytest.raises(RecipeError, match=r"recipe-1\.yaml:\d+:\d+: \$\.calibration\.rollout\.engine: .*did you mean 'hf'"):
        recipe_for(tiny_model_dir, engine="hff")
