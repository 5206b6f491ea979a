"""The evaluate stage end to end on a tiny model: metrics.json, records, probe arrays, schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import torch
from safetensors.torch import load_file, save_file

from rac.engine.cache import Cache
from rac.engine.stage import StageContext
from rac.stages.evaluate import STAGE, EvaluateError, task_settings

REPO = Path(__file__).resolve().parents[2]


def _recipe(model_dir: Path) -> dict:
    return {
        "model": {"id": str(model_dir), "gguf_file": None, "revision": None, "dtype": "float32",
                  "trust_remote_code": False},
        "calibration": {"render": {"chat_template": True, "system_prompt": None, "prefix": ""}},
        "evaluate": {"engine": "hf", "max_new_tokens": 4, "temperature": 0.0, "top_p": 1.0, "samples": 1,
                     "limit": 2, "batch_size": 2, "tasks": [
                         {"name": "gsm8k", "type": "math", "dataset": "gsm8k_test"},
                         {"name": "humaneval", "type": "code", "dataset": "humaneval", "limit": 1,
                          "timeout_s": 5, "memory_mb": 512},
                         {"name": "probe", "type": "probe", "dataset": "gsm8k_test", "limit": 2, "t_max": 3},
                         {"name": "throughput", "type": "throughput", "batch_size": 1, "prompt_len": 8,
                          "decode_len": 2, "repeats": 1}]},
        "run": {"seed": 0},
    }


def _ctx(tmp_path: Path, recipe: dict, cache: Cache, inputs: dict, name: str) -> StageContext:
    out = tmp_path / name
    out.mkdir()
    return StageContext(recipe=recipe, out_dir=out, inputs=inputs, cache=cache, device="cpu",
                        model_identity="tiny-llama-test", run_dir=tmp_path / f"run-{name}")


def _metrics_document(summary: dict) -> dict:
    return {"rac_version": "0.1.0", "recipe": {"name": "t", "path": "t.yaml"},
            "run": {"dir": "runs/t", "device": "cpu", "started": 1.0, "finished": 2.0},
            "stages": {"evaluate": {"status": "done", "fingerprint": "abc", "cache_hit": False, "seconds": 1.0,
                                    "summary": summary}},
            "evaluate": summary}


def test_evaluate_stage_dense_and_pruned(tmp_path, tiny_model_dir):
    recipe, cache = _recipe(tiny_model_dir), Cache(tmp_path / "cache")
    dense = STAGE.run(_ctx(tmp_path, recipe, cache, {}, "dense"))
    assert set(dense) == {"gsm8k", "humaneval", "probe", "throughput"}
    assert dense["gsm8k"]["n_problems"] == 2 and dense["gsm8k"]["max_new_tokens"] == 4
    assert dense["humaneval"]["n_problems"] == 1 and dense["humaneval"]["accuracy"] == 0.0
    assert dense["probe"]["decode_error"] == 0.0 and not dense["probe"]["dense_cache_hit"]
    assert "compressed" not in dense["throughput"]["variants"]
    records = [json.loads(line) for line in (tmp_path / "dense/records/gsm8k.jsonl").read_text().splitlines()]
    assert {"id", "answer", "extracted", "correct", "length", "finish_reason"} <= set(records[0])
    assert json.loads((tmp_path / "dense/metrics.json").read_text())["gsm8k"]["accuracy"] == 0.0

    # a "pruned" upstream artifact: one weight halved
    prune_dir = tmp_path / "prune"
    prune_dir.mkdir()
    weight = load_file(str(tiny_model_dir / "model.safetensors"))["model.layers.0.mlp.down_proj.weight"]
    save_file({"model.layers.0.mlp.down_proj.weight": weight * 0.5}, str(prune_dir / "weights.safetensors"))
    pruned = STAGE.run(_ctx(tmp_path, recipe, cache, {"prune": prune_dir}, "pruned"))
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


def _evaluate_settings(**keys):
    from rac.recipe.settings import recipe_settings

    return recipe_settings({"model": {"id": "m"}, "evaluate": {"tasks": [], **keys}}).evaluate


def test_task_settings_inherit_evaluate_keys():
    task = task_settings(_evaluate_settings(max_new_tokens=128, samples=4), {"name": "m", "type": "math", "samples": None})
    assert task["max_new_tokens"] == 128 and task["samples"] == 4 and task["engine"] == "hf"
    assert task_settings(_evaluate_settings(samples=4), {"name": "m", "type": "math", "samples": 2})["samples"] == 2


def test_duplicate_task_names_rejected(tmp_path, tiny_model_dir):
    recipe = _recipe(tiny_model_dir)
    recipe["evaluate"]["tasks"] = [{"name": "a", "type": "math", "dataset": "gsm8k_test"}] * 2
    with pytest.raises(EvaluateError, match="unique"):
        STAGE.run(_ctx(tmp_path, recipe, Cache(tmp_path / "c"), {}, "dup"))


def test_stage_contract():
    assert STAGE.name == "evaluate" and STAGE.needs == ("prune", "quantize")
    assert not STAGE.enabled({"evaluate": None}) and STAGE.enabled({"evaluate": {"tasks": [{"name": "x"}]}})
