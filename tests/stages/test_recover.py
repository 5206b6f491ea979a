"""Stage `recover` on the tiny model: held-out KL falls, zeros stay zero, the budget holds, and the
stage is planned, fingerprinted, validated and skipped like the other optional stages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rac.calibration.rollouts import RolloutSet, write_rollouts
from rac.engine.cache import Cache
from rac.engine.plan import build_plan
from rac.engine.run import metrics_schema_errors
from rac.engine.stage import StageContext
from rac.recipe import load_and_validate
from rac.recipe.errors import RecipeError
from rac.report import metric_keys as mk
from rac.stages import load_stages, recover
from rac.stages.recover import RecoverError


def _sharp_model(path: Path, tokenizer) -> Path:
    """A 2-layer Llama with a 512-token vocabulary and larger random weights (a peaked next-token
    distribution, so pruning its MLP inputs moves it measurably)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         initializer_range=0.1, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=0)
    LlamaForCausalLM(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _rollouts(model_dir: Path, out: Path, n: int = 48, prompt_len: int = 6, new: int = 12) -> Path:
    """The dense tiny model's own sampled rollouts of ``n`` random prompts (an on-policy artifact)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir)).eval()
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(10, model.config.vocab_size, (n, prompt_len), generator=g)
    torch.manual_seed(0)
    with torch.no_grad():
        full = model.generate(prompts, attention_mask=torch.ones_like(prompts), do_sample=True, max_new_tokens=new,
                              min_new_tokens=new, top_k=0, pad_token_id=0)
    completions = [row[prompt_len:].tolist() for row in full]
    records = [{"prompt_index": i, "sample": 0, "text": "", "finish_reason": "length", "prompt_len": prompt_len,
                "completion_len": len(c), "correct": None, "dropped": None} for i, c in enumerate(completions)]
    write_rollouts(out, RolloutSet(records, prompts.tolist(), completions))
    return out


@pytest.fixture()
def model_dir(tmp_path, tokenizer) -> Path:
    return _sharp_model(tmp_path / "sharp", tokenizer)


@pytest.fixture()
def artifacts(model_dir, tmp_path, make_prune_artifact) -> dict[str, Path]:
    """2:4-pruned gate/up weights and 48 on-policy rollouts of 12 tokens."""
    return {"prune": make_prune_artifact(model_dir, tmp_path / "prune"),
            "rollout": _rollouts(model_dir, tmp_path / "rollout")}


def _ctx(model_dir: Path, tmp: Path, inputs: dict, **recover_keys) -> StageContext:
    out = tmp / "recover-out"
    out.mkdir(exist_ok=True)
    section = {"tokens": 1500, "lr": 1e-3, "batch_size": 4, "heldout": 8, **recover_keys}
    recipe = {"model": {"id": str(model_dir), "dtype": "float32"}, "prune": {"sparsity": 0.5}, "recover": section}
    return StageContext(recipe=recipe, out_dir=out, inputs=inputs, cache=None, device="cpu",  # type: ignore[arg-type]
                        model_identity="x", run_dir=tmp)


def _stage_errors(record: dict) -> list[str]:
    """metrics-schema errors of a ``stages.recover`` record (the rest of the file left out)."""
    return [e for e in metrics_schema_errors({"stages": {"recover": record}}) if e.startswith("stages")]


def test_recover_lowers_heldout_kl_keeps_zeros_and_budget(model_dir, tmp_path, artifacts):
    ctx = _ctx(model_dir, tmp_path, artifacts)
    summary = recover.STAGE.run(ctx)
    assert summary["kl_initial"] > 0 and summary["kl_final"] < 0.9 * summary["kl_initial"]
    assert summary["tokens_trained"] == 1500 and summary["steps"] == 32  # 4 traces x 12 loss tokens a step
    assert summary["heldout_traces"] == 8 and summary["train_traces"] == 40 and summary["epochs"] == 4
    pruned = load_file(str(artifacts["prune"] / "weights.safetensors"))
    recovered = load_file(str(ctx.out_dir / "weights.safetensors"))
    assert set(recovered) == set(pruned)  # the same tensors as prune's artifact, so later stages overlay it
    for name, w in pruned.items():
        assert (recovered[name][w == 0] == 0).all(), f"{name}: a pruned zero came back"
        assert not torch.equal(recovered[name], w), f"{name}: not trained"
    assert set(mk.RECOVER_KEYS) <= set(summary)
    record = {"status": "done", "fingerprint": "f", "cache_hit": False, "seconds": 1.0, "summary": summary}
    assert _stage_errors(record) == []
    assert _stage_errors({**record, "summary": {k: v for k, v in summary.items() if k != "kl_final"}}) != []
    report = json.loads((ctx.out_dir / "report.json").read_text())
    assert report["summary"]["steps"] == summary["steps"] and len(report["curve"]) == summary["steps"]
    assert report["modules"]  # prune's per-module rows ride along


def test_budget_is_exact_when_it_ends_inside_a_batch(model_dir, tmp_path, artifacts):
    summary = recover.STAGE.run(_ctx(model_dir, tmp_path, artifacts, tokens=101, batch_size=2))
    assert summary["tokens_trained"] == 101 and summary["steps"] == 5  # 2 traces x 12 loss tokens = 24 a step


def test_top_k_teacher_and_linear_training(model_dir, tmp_path, artifacts):
    summary = recover.STAGE.run(_ctx(model_dir, tmp_path, artifacts, top_k=32, train="linear"))
    assert summary["teacher"] == "top-32" and summary["kl_final"] < summary["kl_initial"]
    recovered = load_file(str(tmp_path / "recover-out" / "weights.safetensors"))
    assert "model.layers.0.self_attn.q_proj.weight" in recovered and len(recovered) == 14
    pruned = load_file(str(artifacts["prune"] / "weights.safetensors"))
    assert all((recovered[n][w == 0] == 0).all() for n, w in pruned.items())


def test_needs_traces_to_train_on(model_dir, tmp_path, artifacts):
    with pytest.raises(RecoverError, match="recover.heldout"):
        recover.STAGE.run(_ctx(model_dir, tmp_path, artifacts, heldout=48))
    with pytest.raises(RecoverError, match="rollout"):
        recover.STAGE.run(_ctx(model_dir, tmp_path, {"prune": artifacts["prune"]}))


HEAD = ("version: 1\nmodel: {id: smollm2-135m}\ncalibration: {kind: rac}\nprune: {sparsity: 0.5}\nquantize: {}\n"
        "evaluate:\n  tasks: [{name: probe, type: probe, dataset: gsm8k_test, limit: 2}]\n")


def _plan(tmp_path: Path, body: str, overrides: list[str] | None = None):
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + body)
    recipe = load_and_validate(path, overrides or []).data
    return build_plan(recipe, Cache(tmp_path / "cache"), "model-id", load_stages())


def test_plan_order_and_disabled_is_identity(tmp_path):
    on = _plan(tmp_path, "recover: {tokens: 2048}\n")
    assert on.names == ["rollout", "hessian", "prune", "recover", "quantize", "evaluate"]
    assert on.get("quantize").needs == ("prune", "recover") and "recover" in on.get("evaluate").needs
    absent = _plan(tmp_path, "")
    for body in ("recover: {tokens: 2048, enabled: false}\n", "recover: null\n"):
        off = _plan(tmp_path, body)
        assert off.names == absent.names == ["rollout", "hessian", "prune", "quantize", "evaluate"]
        # every later stage reads exactly prune's artifact: same fingerprints, same cache entries
        assert [(p.name, p.fingerprint, p.needs) for p in off] == [(p.name, p.fingerprint, p.needs) for p in absent]


def test_fingerprint_follows_recover_keys(tmp_path):
    base = _plan(tmp_path, "recover: {tokens: 2048}\n")
    for override in ("recover.lr=0.001", "recover.tokens=4096", "recover.temperature=2.0", "recover.top_k=8",
                     "recover.seed=1", "recover.loss_on_prompt=true", "recover.train=linear"):
        other = _plan(tmp_path, "recover: {tokens: 2048}\n", [override])
        assert other.get("recover").fingerprint != base.get("recover").fingerprint, override
        assert other.get("evaluate").fingerprint != base.get("evaluate").fingerprint, override
        assert other.get("prune").fingerprint == base.get("prune").fingerprint, override


@pytest.mark.parametrize(("body", "where", "message"), [
    ("recover: {lr: -1}\n", "$.recover.lr", ""),
    ("recover: {tokens: 0}\n", "$.recover.tokens", ""),
    ("recover: {optimizer: lion}\n", "$.recover.optimizer", ""),
    ("recover: {tokenz: 5}\n", "$.recover", "tokenz"),
    ("recover: {top_k: 0}\n", "$.recover.top_k", ""),
])
def test_bad_values_are_located_validation_errors(tmp_path, body, where, message):
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + body)
    with pytest.raises(RecipeError) as info:
        load_and_validate(path)
    text = str(info.value)
    assert f"{path}:8" in text and where in text and message in text


@pytest.mark.parametrize(("text", "message"), [
    ("version: 1\nmodel: {id: smollm2-135m}\ncalibration: {kind: rac}\nrecover: {}\n", "needs a prune section"),
    ("version: 1\nmodel: {id: smollm2-135m}\ncalibration: {kind: prompt}\nprune: {sparsity: 0.5}\nrecover: {}\n",
     "calibration.kind: rac"),
])
def test_recover_without_its_inputs_is_a_located_error(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(RecipeError, match=message) as info:
        load_and_validate(path)
    assert f"{path}:" in str(info.value) and "$.recover" in str(info.value)
    path.write_text(text.replace("recover: {}", "recover: {enabled: false}"))
    load_and_validate(path)


def test_rac_plan_shows_the_stage(tmp_path, capsys):
    from rac.cli import main

    path = tmp_path / "r.yaml"
    path.write_text(HEAD + "recover: {tokens: 2048}\n")
    code = main(["plan", str(path), "--cache", str(tmp_path / "cache")])
    out = capsys.readouterr().out
    assert code in (0, None) and "recover" in out
