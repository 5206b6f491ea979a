"""Synthetic run directories (no model runs) in the layout ``rac run`` writes, for the report tests.

``write_run`` writes ``recipe.resolved.yaml``, ``status.json`` and ``metrics.json`` (per-stage
records, ``evaluate`` per-task metrics, ``status``/``failure`` for a failed later stage) exactly as
``rac.pipeline.run`` does; the recipes are the paper's base recipe with the repository's overlays
applied, so the labels under test come from real recipe shapes.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import save_file

PAPER_BASE = {
    "version": 1, "name": "r1-distill-7b-rac-sparsegpt50",
    "model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "revision": None, "dtype": "bfloat16"},
    "calibration": {"kind": "rac", "sources": [{"dataset": None, "path": "hf:open-r1/OpenR1-Math-220k",
                                                "split": "train", "field": "problem", "answer_field": "answer"}],
                    "budget": {"tokens": 1000000}, "text_seq_len": 512,
                    "rollout": {"engine": "vllm", "model": None, "t_max": 8192, "seed": 0}, "seed": 0},
    "prune": {"method": "sparsegpt", "sparsity": 0.5, "pattern": None, "dampening": 0.01,
              "scopes": [{"name": "all", "modules": ["attn", "mlp"], "blocks": "all", "sparsity": None,
                          "pattern": None, "method": None}]},
    "quantize": None,
    "evaluate": {"engine": "vllm", "max_new_tokens": 32768, "tasks": [{"name": "math500", "type": "math"}]},
    "export": {"format": "hf", "path": None},
    "run": {"output_dir": "runs/paper", "name": None, "seed": 0, "device": "cuda"},
}
C4 = {"calibration": {"kind": "text", "text_seq_len": 2048,
                      "sources": [{"dataset": None, "path": "hf:allenai/c4:en", "split": "validation", "field": "text"}]}}
PROMPT = {"calibration": {"kind": "prompt"}}
RAC = {"calibration": {"kind": "rac"}}
DENSE = {"name": "dense", "prune": None, "quantize": None}
OFF_POLICY_14B = {"calibration": {"kind": "rac", "rollout": {"model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
                                                                        "dtype": "bfloat16"}}}}
FP8 = {"quantize": {"scheme": "fp8_w8a8", "ignore": ["lm_head"]}, "export": {"format": "compressed-tensors"}}
MODEL_14B = {"model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"}}


def _scope(name: str, blocks: str) -> dict:
    return {"name": name, "modules": ["mlp"], "blocks": blocks, "sparsity": None, "pattern": "2:4", "method": None}


MLP24_FIRST = {"prune": {"scopes": [_scope("mlp-first", "first_third")]}}
MLP24_FIRST_LAST = {"prune": {"scopes": [_scope("mlp-first", "first_third"), _scope("mlp-last", "last_third")]}}
MLP24_ALL = {"prune": {"scopes": [_scope("mlp-all", "all")]}}


def merge(base: dict, *overlays: dict) -> dict:
    """Overlay merge as recipes do it: mappings merge, everything else (lists, null) replaces."""
    out = copy.deepcopy(base)
    for overlay in overlays:
        for key, value in overlay.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = copy.deepcopy(value)
    return out


def _probe_arrays(scale: float, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    prompt_len = torch.tensor([5, 7, 4])
    lengths = prompt_len + torch.tensor([10, 6, 12])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    total = int(offsets[-1])
    err = (torch.rand(total, generator=gen) + 0.5) * scale
    return {"abs_error": err, "rel_error": err / 10, "nll": err.clone(), "dense_nll": err / 2,
            "offsets": offsets, "prompt_len": prompt_len}


def write_run(root: Path, name: str, recipe: dict, evaluate: dict, failed_stage: str | None = None,
              probe_scale: float | None = None, seed: int = 0, samples: dict[str, list[dict]] | None = None,
              stages_before: tuple[str, ...] = ()) -> Path:
    """One run directory as ``rac run`` leaves it (``failed_stage``: that stage raised after evaluate,
    or before it when it is in ``stages_before``: evaluate then never ran); ``samples``: per-task
    sample records written to the evaluate artifact's ``records/<task>.jsonl``."""
    run = root / name
    artifact = run / "artifacts" / "evaluate"
    artifact.mkdir(parents=True)
    for task, rows in (samples or {}).items():
        (artifact / "records").mkdir(exist_ok=True)
        (artifact / "records" / f"{task}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if failed_stage in stages_before:
        evaluate = {}
    if probe_scale is not None:
        (artifact / "probe").mkdir()
        save_file(_probe_arrays(max(probe_scale, 1e-6), seed), str(artifact / "probe" / "probe.safetensors"))
        evaluate = {**evaluate, "probe": {"type": "probe", "status": "ok", "decode_nll": probe_scale,
                                          "decode_error": probe_scale, "prompt_error": probe_scale / 2,
                                          "arrays": "probe/probe.safetensors"}}
    (artifact / "metrics.json").write_text(json.dumps(evaluate))
    stages = [s for s in ("rollout", "hessian", "prune", "quantize") if recipe.get("prune") or s == "quantize"]
    stages = [s for s in stages if s != "quantize" or recipe.get("quantize")] + ["evaluate", "export"]
    records, status = {}, {}
    for stage in stages:
        state = "failed" if stage == failed_stage else "pending" if failed_stage in stages_before and \
            stages.index(stage) > stages.index(failed_stage) else "done"
        records[stage] = {"status": state, "fingerprint": f"{stage}-{name}", "cache_hit": False, "seconds": 12.5,
                          "summary": evaluate if stage == "evaluate" else {}}
        status[stage] = {"status": state, "fingerprint": f"{stage}-{name}", "attempts": 1}
        if stage == "evaluate":
            status[stage]["artifact"] = str(artifact)
        if state == "failed":
            records[stage]["error"] = status[stage]["error"] = "OSError: No space left on device"
    metrics = {"rac_version": "0.1.0", "recipe": {"name": recipe.get("name") or name, "path": "r.yaml"},
               "run": {"dir": str(run), "device": "cuda", "started": 0.0, "finished": 1.0},
               "status": "failed" if failed_stage else "ok", "stages": records, "evaluate": evaluate}
    if failed_stage:
        metrics["failure"] = {"stage": failed_stage, "error": "OSError: No space left on device"}
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    (run / "status.json").write_text(json.dumps(status))
    (run / "metrics.json").write_text(json.dumps(metrics))
    return run


def math_metrics(acc: float, minutes: float = 20.0, length: float = 4000.0, n: int = 500, budget: int = 32768) -> dict:
    return {"math500": {"type": "math", "status": "ok", "n_problems": n, "samples": 1, "accuracy": acc,
                        "accuracy_se": (acc * (1 - acc) / n) ** 0.5, "mean_length": length,
                        "truncated_fraction": 0.01, "wall_seconds": minutes * 60, "tokens_per_second": 1500.0,
                        "max_new_tokens": budget, "seconds": minutes * 60}}


def throughput_metrics(tokens_per_s: float) -> dict:
    phase = {"prefill_seconds": 1.0, "decode_seconds": 1.0, "prefill_tokens_per_s": 9000.0,
             "decode_tokens_per_s": tokens_per_s, "kernel": "2:4"}
    return {"throughput": {"type": "throughput", "status": "ok", "device": "cuda", "batch_size": 16, "prompt_len": 128,
                           "decode_len": 128, "variants": {"dense": {**phase, "decode_tokens_per_s": 1426.0},
                                                           "compressed": phase},
                           "speedup": {"prefill": 1.0, "decode": tokens_per_s / 1426.0}}}


def length_block(mean: float, budget_hit: float = 0.1, eos: float = 0.9, loop: float = 0.05,
                 reasoning_end: float | None = 0.95, budget: int = 32768) -> dict:
    """The ``length`` block evaluate writes for a generation task (rac.eval.length.length_metrics)."""
    return {"mean_tokens": mean, "p90_tokens": mean * 1.5, "budget": budget, "budget_hit_rate": budget_hit,
            "eos_rate": eos, "reasoning_end_rate": reasoning_end, "loop_share": loop, "looping_samples": loop * 2}


def sample_records(lengths: list[int], budget: int = 32768) -> list[dict]:
    """Per-sample records of a generation task, problem ids p0, p1, ... (one sample each)."""
    return [{"id": f"p{i}", "sample": 0, "length": n, "correct": True,
             "finish_reason": "length" if n >= budget else "stop"} for i, n in enumerate(lengths)]


def code_metrics(acc: float, minutes: float = 300.0, samples: int = 16, n: int = 279) -> dict:
    return {"lcb": {"type": "code", "status": "ok", "n_problems": n, "samples": samples, "accuracy": acc,
                    "accuracy_se": (acc * (1 - acc) / n) ** 0.5, "mean_length": 9000.0, "truncated_fraction": 0.05,
                    "wall_seconds": minutes * 60, "tokens_per_second": 1500.0, "max_new_tokens": 32768,
                    "seconds": minutes * 60}}
