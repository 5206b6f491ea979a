"""Closed-loop RAC (``prune.closed_loop.rounds``): later blocks calibrated on the pruned model's own rollouts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from rac.calibration.closed_loop import block_groups
from rac.calibration.mix import KIND_DECODE, KIND_PROMPT, CalibrationSet
from rac.engine.cache import Cache
from rac.engine.pipeline import plan_recipe
from rac.engine.stage import StageContext
from rac.recipe import load_and_validate
from rac.recipe.errors import RecipeError
from rac.stages import hessian, prune, rollout


@pytest.fixture()
def model_dir(tmp_path, tokenizer) -> Path:
    """A 2-block random Llama with peaky logits (initializer_range 0.2): pruning block 0 changes its greedy
    rollouts (the conftest model's near-uniform logits give the same tokens dense and pruned)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                         initializer_range=0.2, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    path = tmp_path / "peaky-llama"
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _write(tmp_path: Path, model_dir: Path, rounds: int | None, extra: str = "", kind: str = "rac") -> Path:
    data = tmp_path / "calib.jsonl"
    data.write_text("".join(json.dumps({"q": f"What is {i} + {i}?", "a": str(2 * i)}) + "\n" for i in range(6)))
    loop = "" if rounds is None else f", closed_loop: {{rounds: {rounds}}}"
    path = tmp_path / f"r{rounds}{kind}.yaml"
    path.write_text(f"""version: 1
model: {{id: {model_dir}}}
calibration:
  kind: {kind}
  sources: [{{path: calib.jsonl, field: q, answer_field: a}}]
  budget: {{prompts: 3, tokens: null}}
  rollout: {{t_max: 12, batch_size: 4, temperature: 0}}
prune: {{sparsity: 0.5, batch_size: 2{loop}}}
{extra}run: {{device: cpu}}
""")
    return path


def _run(tmp_path: Path, recipe: dict, name: str, cache: Cache,
         upstream: dict[str, Path] | None = None) -> tuple[dict, Path, dict[str, Path]]:
    """rollout -> hessian -> prune as the engine runs them (``upstream``: reuse those artifacts, as the
    engine does when their reads match); (prune summary, prune dir, every stage's dir)."""
    outputs: dict[str, Path] = dict(upstream or {})
    summary: dict = {}
    for stage in (rollout, hessian, prune):
        if stage.STAGE.name in outputs:
            continue
        out = tmp_path / name / stage.STAGE.name
        out.mkdir(parents=True)
        ctx = StageContext(recipe=recipe, out_dir=out, inputs={n: outputs[n] for n in stage.STAGE.needs},
                           cache=cache, device="cpu", model_identity="", run_dir=tmp_path / name)
        summary = stage.run(ctx)
        outputs[stage.STAGE.name] = out
    return summary, outputs["prune"], outputs


def test_block_groups_split_the_pruned_blocks_in_order():
    assert block_groups([0, 1, 2, 3, 4], 2) == [[0, 1], [2, 3, 4]]
    assert block_groups([0, 1, 2, 27, 28, 29], 3) == [[0, 1], [2, 27], [28, 29]]  # scoped: only pruned blocks
    assert block_groups([3], 1) == [[3]] and block_groups([], 1) == [[]]
    groups = block_groups(list(range(7)), 3)
    assert sum(groups, []) == list(range(7)) and all(groups)
    with pytest.raises(ValueError, match="prune.closed_loop.rounds"):
        block_groups([0, 1], 3)


def test_one_round_is_todays_prune_bit_for_bit(tmp_path, model_dir, monkeypatch):
    import rac.calibration.closed_loop as closed_loop

    def no_generation(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rounds: 1 must not generate")

    monkeypatch.setattr(closed_loop, "regenerate", no_generation)
    cache = Cache(tmp_path / "cache")
    today = load_and_validate(_write(tmp_path, model_dir, None)).data
    one = load_and_validate(_write(tmp_path, model_dir, 1)).data
    assert one["prune"]["closed_loop"] == {"rounds": 1} == today["prune"]["closed_loop"]
    s_today, d_today, dirs = _run(tmp_path, today, "today", cache)
    s_one, d_one, _ = _run(tmp_path, one, "one", cache, {k: dirs[k] for k in ("rollout", "hessian")})
    w_today, w_one = load_file(str(d_today / "weights.safetensors")), load_file(str(d_one / "weights.safetensors"))
    assert set(w_today) == set(w_one) and len(w_one) == 14
    assert all(torch.equal(w_today[k], w_one[k]) for k in w_one)
    assert "closed_loop" not in s_one and not (d_one / "closed_loop.json").exists()
    assert s_one["modules"] == s_today["modules"] and s_one["mean_sparsity"] == s_today["mean_sparsity"]


def test_two_rounds_calibrate_block_1_on_the_pruned_models_rollouts(tmp_path, model_dir):
    from rac.engines.base import SamplingConfig
    from rac.engines.hf import HFEngine
    from rac.models.load import load_model

    cache = Cache(tmp_path / "cache")
    one = load_and_validate(_write(tmp_path, model_dir, 1)).data
    two = load_and_validate(_write(tmp_path, model_dir, 2)).data
    s1, d1, dirs = _run(tmp_path, one, "one", cache)
    s2, d2, _ = _run(tmp_path, two, "two", cache, {k: dirs[k] for k in ("rollout", "hessian")})

    dense = CalibrationSet.load(dirs["hessian"])
    visited = CalibrationSet.load(d2 / "closed_loop_round2")
    prompts = [ids[kinds == KIND_PROMPT].tolist() for ids, _, kinds in (dense.sequence(i) for i in range(len(dense)))]
    got = [visited.sequence(i) for i in range(len(visited))]
    assert [ids[kinds == KIND_PROMPT].tolist() for ids, _, kinds in got] == prompts  # the same prompts
    new = [ids[kinds == KIND_DECODE].tolist() for ids, _, kinds in got]
    old = [ids[kinds == KIND_DECODE].tolist() for ids, _, kinds in (dense.sequence(i) for i in range(len(dense)))]
    assert new != old  # not the dense rollouts

    # ... but exactly what the model with block 0 pruned (block 1 dense) generates with the rollout sampling
    model, tokenizer = load_model(two["model"], "cpu")
    pruned = load_file(str(d2 / "weights.safetensors"))
    state = {k: v for k, v in pruned.items() if ".layers.0." in k}
    assert len(state) == 7
    model.load_state_dict(state, strict=False)
    cfg = two["calibration"]["rollout"]
    sampling = SamplingConfig(max_new_tokens=cfg["t_max"], temperature=cfg["temperature"], top_p=cfg["top_p"],
                              top_k=cfg["top_k"], seed=cfg["seed"], n=cfg["samples_per_prompt"])
    expected = HFEngine(model, tokenizer, batch_size=cfg["batch_size"]).generate(prompts, sampling)
    assert new == [list(g.completion_ids) for gens in expected for g in gens]

    rounds = s2["closed_loop"]
    assert [r["round"] for r in rounds] == [1, 2] and [r["blocks"] for r in rounds] == [[0, 0], [1, 1]]
    assert rounds[1]["tokens_generated"] == sum(len(c) for c in new) > 0
    assert rounds[1]["mean_rollout_len"] == pytest.approx(sum(len(c) for c in new) / len(new), abs=1e-3)
    assert rounds[0]["mean_rollout_len"] == pytest.approx(sum(len(c) for c in old) / len(old), abs=1e-3)
    assert json.loads((d2 / "closed_loop.json").read_text())["rounds"] == rounds

    w1, w2 = load_file(str(d1 / "weights.safetensors")), load_file(str(d2 / "weights.safetensors"))
    assert all(torch.equal(w1[k], w2[k]) for k in w1 if ".layers.0." in k)  # round 1 is plain RAC
    assert not torch.equal(w1["model.layers.1.mlp.down_proj.weight"], w2["model.layers.1.mlp.down_proj.weight"])
    assert s2["mean_sparsity"] == 0.5 and s2["modules"] == 14
    report = json.loads((d2 / "report.json").read_text())["modules"]
    assert all(r["achieved"] == 0.5 and 0 < r["recon_error"] < 1 for r in report)
    assert s2["hessian_misses"] > 0  # block 1's Hessians come from the new rollouts, not block-0 keys


def test_rounds_change_the_prune_fingerprint_only(tmp_path, model_dir):
    plans = [plan_recipe(load_and_validate(_write(tmp_path, model_dir, r)).data, Cache(tmp_path / "c"))
             for r in (1, 2)]
    prints = [{s.name: s.fingerprint for s in plan} for plan in plans]
    assert prints[0]["prune"] != prints[1]["prune"]
    assert prints[0]["hessian"] == prints[1]["hessian"] and prints[0]["rollout"] == prints[1]["rollout"]
    assert "calibration.rollout" in prune.STAGE.reads and "calibration.weights" in prune.STAGE.reads


@pytest.mark.parametrize(("rounds", "extra", "kind", "message"), [
    (3, "", "rac", "3 rounds but the recipe prunes 2 decoder blocks"),
    (0, "", "rac", "0 is out of range: must be >= 1"),
    (2, "", "prompt", "need calibration.kind rac"),
])
def test_bad_rounds_are_located_errors(tmp_path, model_dir, rounds, extra, kind, message):
    path = _write(tmp_path, model_dir, rounds, extra, kind)
    with pytest.raises(RecipeError) as error:
        load_and_validate(path)
    text = str(error.value)
    line = next(i for i, row in enumerate(path.read_text().splitlines(), 1) if row.startswith("prune:"))
    assert f"{path.name}:{line}:" in text and "prune.closed_loop.rounds" in text, text
    assert message in text, text


def test_stage_refuses_rounds_without_sequential_before_any_work(tmp_path, model_dir):
    path = _write(tmp_path, model_dir, 2)
    with pytest.raises(RecipeError, match="prune.sequential true"):
        load_and_validate(path, ["prune.sequential=false"])
