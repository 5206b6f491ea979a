"""The evaluate stage end to end on a tiny model: metrics.json, records, probe arrays, schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from safetensors.torch import load_file, save_file

from rac.engines.base import Generation
from rac.recipe import RecipeError
from rac.recipe.settings import EvaluateSettings
from rac.stages.evaluate import STAGE, EvaluateError, run_generation_task, task_settings

REPO = Path(__file__).resolve().parents[2]


EVALUATE = {"engine": "hf", "max_new_tokens": 4, "temperature": 0.0, "top_p": 1.0, "samples": 1, "limit": 2,
            "batch_size": 2, "tasks": [
                {"name": "gsm8k", "type": "math", "dataset": "gsm8k_test"},
                {"name": "humaneval", "type": "code", "dataset": "humaneval", "limit": 1, "timeout_s": 5,
                 "memory_mb": 512},
                {"name": "probe", "type": "probe", "dataset": "gsm8k_test", "limit": 2, "t_max": 3},
                {"name": "throughput", "type": "throughput", "batch_size": 1, "prompt_len": 8, "decode_len": 2,
                 "repeats": 1}]}


@pytest.fixture()
def eval_recipe(recipe, tiny_model_dir):
    """``eval_recipe(**overrides)``: the four task types on the tiny Llama, greedy 4-token answers."""
    return lambda **overrides: recipe(**{"model.id": tiny_model_dir, "evaluate": EVALUATE, **overrides})


@pytest.fixture()
def eval_ctx(stage_ctx, tmp_path):
    """``eval_ctx(recipe, name, inputs={})``: an evaluate-stage context in its own run folder."""
    return lambda recipe, name, inputs=None: stage_ctx(recipe, name, inputs=inputs, model_identity="tiny-llama-test",
                                                       run_dir=tmp_path / f"run-{name}")


def _metrics_document(summary: dict) -> dict:
    return {"rac_version": "0.1.0", "recipe": {"name": "t", "path": "t.yaml"},
            "run": {"dir": "runs/t", "device": "cpu", "started": 1.0, "finished": 2.0},
            "stages": {"evaluate": {"status": "done", "fingerprint": "abc", "cache_hit": False, "seconds": 1.0,
                                    "summary": summary}},
            "evaluate": summary}


def test_evaluate_stage_dense_and_pruned(tmp_path, tiny_model_dir, eval_recipe, eval_ctx):
    recipe = eval_recipe()
    dense = STAGE.run(eval_ctx(recipe, "dense"))
    assert set(dense) == {"gsm8k", "humaneval", "probe", "throughput"}
    assert dense["gsm8k"]["n_problems"] == 2 and dense["gsm8k"]["max_new_tokens"] == 4
    assert dense["humaneval"]["n_problems"] == 1 and dense["humaneval"]["accuracy"] == 0.0
    assert dense["probe"]["decode_error"] == 0.0 and not dense["probe"]["dense_cache_hit"]
    assert "compressed" not in dense["throughput"]["variants"]
    records = [json.loads(line) for line in (tmp_path / "dense/records/gsm8k.jsonl").read_text().splitlines()]
    assert {"id", "answer", "extracted", "correct", "length", "finish_reason", "status", "loop_share",
            "reasoning_ended"} <= set(records[0])
    assert dense["gsm8k"]["length"]["mean_tokens"] == dense["gsm8k"]["mean_length"]
    assert dense["gsm8k"]["answer"]["extract"] == ["gsm8k", "boxed"]  # the gsm8k_test default
    assert dense["gsm8k"]["truncated"] == sum(r["finish_reason"] == "length" for r in records)
    assert json.loads((tmp_path / "dense/metrics.json").read_text())["gsm8k"]["accuracy"] == 0.0

    # a "pruned" upstream artifact: one weight halved
    prune_dir = tmp_path / "prune"
    prune_dir.mkdir()
    weight = load_file(str(tiny_model_dir / "model.safetensors"))["model.layers.0.mlp.down_proj.weight"]
    save_file({"model.layers.0.mlp.down_proj.weight": weight * 0.5}, str(prune_dir / "weights.safetensors"))
    pruned = STAGE.run(eval_ctx(recipe, "pruned", {"prune": prune_dir}))
    assert pruned["probe"]["dense_cache_hit"] and pruned["probe"]["decode_error"] > 0
    arrays = load_file(str(tmp_path / "pruned" / pruned["probe"]["arrays"]))
    assert torch.all(arrays["abs_error"] > 0)
    assert pruned["throughput"]["variants"]["compressed"]["kernel"] == "none"

    schema = json.loads((REPO / "schemas" / "metrics.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(_metrics_document(pruned), schema, cls=jsonschema.Draft202012Validator)
    broken = _metrics_document(pruned)
    del broken["evaluate"]["gsm8k"]["accuracy_se"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)
    broken = _metrics_document(pruned)
    del broken["evaluate"]["gsm8k"]["length"]["eos_rate"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema, cls=jsonschema.Draft202012Validator)


@pytest.fixture()
def evaluate_settings(recipe):
    """``evaluate_settings(*tasks, **keys)``: the typed evaluate section of a loaded recipe."""
    from rac.recipe.settings import recipe_settings

    def build(*tasks: dict, **keys) -> EvaluateSettings:
        evaluate = recipe_settings(recipe(**{"model.id": "m", "evaluate": {"tasks": list(tasks), **keys}})).evaluate
        assert evaluate is not None
        return evaluate

    return build


def test_task_settings_inherit_evaluate_keys(evaluate_settings):
    settings = evaluate_settings({"name": "m", "type": "math", "dataset": "gsm8k_test", "samples": None},
                                 max_new_tokens=128, samples=4)
    task = task_settings(settings, settings.tasks[0])
    assert task["max_new_tokens"] == 128 and task["samples"] == 4 and task["engine"] == "hf"
    settings = evaluate_settings({"name": "m", "type": "math", "dataset": "gsm8k_test", "samples": 2}, samples=4)
    assert task_settings(settings, settings.tasks[0])["samples"] == 2


def test_duplicate_task_names_rejected(eval_recipe):
    with pytest.raises(RecipeError, match=r"recipe-1\.yaml:\d+:\d+: \$\.evaluate\.tasks\[1\]\.name: duplicate "
                                          r"task name 'a' \(also tasks\[0\]\)"):
        eval_recipe(**{"evaluate.tasks": [{"name": "a", "type": "math", "dataset": "gsm8k_test"}] * 2})


def test_stage_contract(recipe):
    assert STAGE.name == "evaluate" and STAGE.needs == ("prune", "recover", "quantize")
    assert not STAGE.enabled(recipe(**{"model.id": "m"}))
    assert STAGE.enabled(recipe(**{"model.id": "m", "evaluate.tasks": [{"name": "x", "type": "probe"}]}))


class _ScriptedEngine:
    """Returns fixed completions (one per prompt) instead of generating."""

    name = "scripted"

    def __init__(self, completions: list[tuple[str, str]]) -> None:
        self.completions, self.calls = completions, 0

    def generate(self, prompts, sampling, progress=None):
        self.calls += 1
        return [[Generation(list(p), [1] * 7, text, finish)] for p, (text, finish) in zip(prompts, self.completions)]


@pytest.fixture()
def math_task(evaluate_settings):
    """``math_task(**answer)``: a 2-problem GSM8K task (7-token greedy answers) as the stage reads it."""
    def build(**answer) -> dict:
        task = {"name": "gsm8k", "type": "math", "dataset": "gsm8k_test", "limit": 2, "answer": answer}
        settings = evaluate_settings(task, max_new_tokens=7, temperature=0.0)
        return task_settings(settings, settings.tasks[0])

    return build


def test_truncated_reasoning_trace_is_wrong_and_reported_separately(recipe, eval_ctx, math_task, tokenizer):
    from rac.calibration.datasets import load_records
    from rac.eval.math import reference_answer

    answers = [reference_answer(r["answer"]) for r in load_records({"dataset": "gsm8k_test"})[:2]]
    engine = _ScriptedEngine([
        (f"<think>\nFirst 2 + 2 = 4, then {answers[0]}", "length"),  # cut mid-thought; last number = answer
        (f"<think>\nso {answers[1]}.\n</think>\n#### {answers[1]}", "stop"),
    ])
    ctx = eval_ctx(recipe(**{"model.id": "x"}), "scripted")
    metrics, records = run_generation_task(ctx, math_task(after="</think>"), engine, tokenizer)
    assert [r["correct"] for r in records] == [False, True]
    assert [r["status"] for r in records] == ["no_marker", "graded"]
    assert metrics["accuracy"] == 0.5 and metrics["truncated"] == 1 and metrics["truncated_fraction"] == 0.5
    assert metrics["accuracy_excluding_truncated"] == 1.0 and metrics["no_answer"] == 1
    assert metrics["answer"] == {"after": "</think>", "extract": ["gsm8k", "boxed"], "on_missing": "wrong"}
    assert [r["reasoning_ended"] for r in records] == [False, True]
    assert metrics["length"]["reasoning_end_rate"] == 0.5 and metrics["length"]["eos_rate"] == 0.5
    assert metrics["length"]["budget_hit_rate"] == 0.5 and metrics["length"]["budget"] == 7

    # `after: auto` on a tokenizer without `</think>` (SmolLM2) searches the whole text: still no last number
    metrics, records = run_generation_task(ctx, math_task(), engine, tokenizer)
    assert metrics["answer"]["after"] is None and [r["correct"] for r in records] == [False, True]


def test_answer_marker_the_engine_strips_is_an_error_before_generating(recipe, eval_ctx, math_task, tokenizer):
    engine = _ScriptedEngine([])
    ctx = eval_ctx(recipe(**{"model.id": "x"}), "special")
    with pytest.raises(EvaluateError, match=r"evaluate.tasks\[gsm8k\].answer.after: '<\|im_end\|>' is a special"):
        run_generation_task(ctx, math_task(after="<|im_end|>"), engine, tokenizer)
    assert engine.calls == 0


def test_auto_marker_follows_the_tokenizer(recipe, eval_ctx, math_task):
    """`after: auto` is `</think>` for a tokenizer that has it as a (kept) token; a special one is an error."""
    from transformers import AutoTokenizer

    from rac.stages.evaluate import answer_spec

    ctx = eval_ctx(recipe(**{"model.id": "x"}), "auto")
    folder = REPO / "tests" / "fixtures" / "smollm2_tokenizer"
    reasoning = AutoTokenizer.from_pretrained(str(folder))
    reasoning.add_tokens(["<think>", "</think>"])  # like DeepSeek-R1 / Qwen3: added, not special
    assert answer_spec(ctx, math_task(), reasoning, "What is 2 + 2?").after == "</think>"
    stripping = AutoTokenizer.from_pretrained(str(folder))
    stripping.add_special_tokens({"additional_special_tokens": ["</think>"]})
    with pytest.raises(EvaluateError, match="special token"):
        answer_spec(ctx, math_task(), stripping, "What is 2 + 2?")


# -- problem slices: empty slices and duplicate ids fail before the model is loaded -----------------
@pytest.fixture()
def no_model_load(monkeypatch):
    """Loading a model at all fails the test: these errors must come before any heavy work."""
    import rac.models.load

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad eval slice was reported")

    monkeypatch.setattr(rac.models.load, "load_model", refuse)


def test_offset_past_the_end_is_an_error_before_loading(eval_recipe, eval_ctx, no_model_load):
    recipe = eval_recipe(**{"evaluate.tasks": [{"name": "late", "type": "probe", "dataset": "gsm8k_test",
                                                "offset": 5000}]})
    with pytest.raises(EvaluateError, match=r"evaluate.tasks\[late\]: offset 5000 is past the end of .*gsm8k_test"
                                            r".*\(1319 records\)"):
        STAGE.run(eval_ctx(recipe, "late"))


def test_duplicate_problem_ids_are_an_error_naming_both_lines(tmp_path, eval_recipe, eval_ctx, no_model_load):
    data = tmp_path / "problems.jsonl"
    rows = [{"id": "p1", "q": "1+1?", "a": "2"}, {"id": "p2", "q": "2+2?", "a": "4"}, {"id": "p1", "q": "3+3?", "a": "6"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = eval_recipe(**{"evaluate.limit": None, "evaluate.tasks": [
        {"name": "dups", "type": "math", "path": data, "field": "q", "answer_field": "a", "limit": None}]})
    with pytest.raises(EvaluateError, match=r"problem id 'p1' appears twice \(.*problems\.jsonl:1 and "
                                            r".*problems\.jsonl:3\)"):
        STAGE.run(eval_ctx(recipe, "dups"))


def test_prompts_longer_than_the_context_are_counted_and_warned(tmp_path, tiny_model_dir, eval_recipe, eval_ctx,
                                                                caplog):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["max_position_embeddings"] = 48
    (tiny_model_dir / "config.json").write_text(json.dumps(config))
    data = tmp_path / "problems.jsonl"
    rows = [{"q": "1+1?", "a": "2"}, {"q": " ".join(["word"] * 60), "a": "4"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = eval_recipe(**{"evaluate.tasks": [{"name": "ctx", "type": "math", "path": data, "field": "q",
                                                "answer_field": "a", "max_new_tokens": 2}]})
    with caplog.at_level("WARNING"):
        metrics = STAGE.run(eval_ctx(recipe, "ctx"))["ctx"]
    assert metrics["context_length"] == 48 and metrics["n_problems"] == 2
    assert metrics["prompts_over_context"] == 1 and metrics["prompts_over_context_with_answer"] == 1
    assert "1 of 2 prompts are as long as the model's context (48 tokens)" in caplog.text


def test_hf_model_is_freed_before_a_vllm_engine_starts(eval_recipe, eval_ctx, monkeypatch):
    """No live HF copy of the evaluated model when vLLM starts (it sizes its KV cache from free memory);
    later tasks that need the HF model load it again. A stand-in plays vLLM."""
    import gc
    import weakref

    import rac.engines.factory as factory
    import rac.models.load as load
    from rac.engines.base import Generation

    loaded: list[weakref.ref] = []
    real_load = load.load_model

    def tracking_load(*args, **kwargs):
        model, tok = real_load(*args, **kwargs)
        loaded.append(weakref.ref(model))
        return model, tok

    started: list[dict] = []

    class StandIn:
        def generate(self, prompts, sampling, progress=None):
            return [[Generation(list(p), [1], "#### 0", "stop")] for p in prompts]

        def close(self):
            pass

    def fake_get_engine(name, spec, device, dtype, options=None):
        gc.collect()
        started.append({"name": name, "alive": sum(r() is not None for r in loaded), **(options or {})})
        return StandIn()

    monkeypatch.setattr(load, "load_model", tracking_load)
    monkeypatch.setattr(factory, "get_engine", fake_get_engine)
    recipe = eval_recipe(**{
        "evaluate.engine": "vllm",  # the probe and throughput tasks run on the HF model whatever the engine
        "evaluate.vllm": {"gpu_memory_utilization": 0.95, "max_model_len": 4096, "tensor_parallel_size": 2},
        "evaluate.tasks": [{"name": "gsm8k", "type": "math", "dataset": "gsm8k_test"},
                           {"name": "probe", "type": "probe", "dataset": "gsm8k_test", "limit": 2, "t_max": 3}]})
    metrics = STAGE.run(eval_ctx(recipe, "vllm"))
    (start,) = started
    assert start["name"] == "vllm" and start["alive"] == 0  # every HF copy was released before vLLM started
    assert start["gpu_memory_utilization"] == 0.95 and start["max_model_len"] == 4096
    assert start["tensor_parallel_size"] == 2 and start["enforce_eager"] is False
    assert metrics["gsm8k"]["status"] == "ok" and metrics["probe"]["status"] == "ok"
    assert len(loaded) == 2  # reloaded for the probe after the vLLM task


def test_throughput_shapes_share_one_load_of_each_variant(tmp_path, tiny_model_dir, eval_recipe, eval_ctx,
                                                           monkeypatch):
    """Two backend-torch throughput tasks load the dense and the compressed model once each (not once per
    task), and each task still reports its own shape, timings and share of the loads."""
    from rac.stages import evaluate as evaluate_stage

    loads: list[tuple[str, ...]] = []
    real = evaluate_stage._dense_copy_with

    def counted(ctx, *stages, **kwargs):
        loads.append(stages)
        return real(ctx, *stages, **kwargs)

    monkeypatch.setattr(evaluate_stage, "_dense_copy_with", counted)
    tasks = [{"name": f"throughput_bs{b}", "type": "throughput", "batch_size": b, "prompt_len": 8, "decode_len": 2,
              "repeats": 1} for b in (1, 2)]
    recipe = eval_recipe(**{"evaluate": {**EVALUATE, "tasks": [EVALUATE["tasks"][0], *tasks]}})
    prune_dir = tmp_path / "prune"
    prune_dir.mkdir()
    weight = load_file(str(tiny_model_dir / "model.safetensors"))["model.layers.0.mlp.down_proj.weight"]
    save_file({"model.layers.0.mlp.down_proj.weight": weight * 0.5}, str(prune_dir / "weights.safetensors"))
    out = STAGE.run(eval_ctx(recipe, "pruned", {"prune": prune_dir}))
    assert loads == [(), ("prune", "recover", "quantize")]  # dense once, compressed once
    assert list(out) == ["gsm8k", "throughput_bs1", "throughput_bs2"]
    for b in (1, 2):
        metrics = out[f"throughput_bs{b}"]
        assert metrics["batch_size"] == b and set(metrics["variants"]) == {"dense", "compressed"}
        assert metrics["measured_with"] == ["throughput_bs1", "throughput_bs2"]
        assert 0 < metrics["load_seconds"] <= metrics["seconds"]
    schema = json.loads((REPO / "schemas" / "metrics.schema.json").read_text())
    jsonschema.validate(_metrics_document(out), schema, cls=jsonschema.Draft202012Validator)
