"""Evaluate stage: math / code benchmarks, lm-eval tasks, the decode-fidelity probe and throughput.

The evaluated model is the recipe's model with every upstream artifact (prune, quantize) overlaid;
a dense baseline has no upstream artifacts. Task-level generation keys (max_new_tokens, samples,
temperature, top_p, limit) default to the ``evaluate``-level ones. Problems are the first ``limit``
records of the data set (probe: starting at ``offset``), rendered exactly like calibration prompts.
Outputs: ``metrics.json`` ({task: metrics}), ``records/<task>.jsonl``, ``probe/<task>.safetensors``.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rac.errors import RacError
from rac.eval.context import context_report
from rac.hashing import json_digest
from rac.pipeline.cache import atomic_write_json
from rac.pipeline.stage import Stage, StageContext

if TYPE_CHECKING:
    from rac.eval.math import AnswerSpec
    from rac.recipe.settings import EvaluateSettings

PROBE_VERSION = "2"  # 2: end-of-rollout positions (termination probe)
HUMANEVAL_INSTRUCTION = ("Complete the following Python function. Answer with the complete function in a "
                         "```python code block.\n\n```python\n{prompt}```")


class EvaluateError(RacError, ValueError):
    """An evaluate task is misconfigured (unknown type, missing data field, ...)."""


EVAL_SPLIT = "test"  # evaluation problems come from a data set's test split (no task type has a split key)
INHERITED_KEYS = ("max_new_tokens", "temperature", "top_p", "samples", "limit", "batch_size", "engine")


def task_settings(evaluate: EvaluateSettings, task: Mapping[str, Any]) -> dict:
    """The (schema-filled) task as a dict, with unset generation keys taken from the evaluate section."""
    from rac.recipe.settings import thaw

    merged = thaw(task)
    for key in INHERITED_KEYS:
        if merged.get(key) is None:
            merged[key] = getattr(evaluate, key)
    return merged


def load_problems(task: dict) -> tuple[list[dict], str, str | None]:
    """(records, problem field, answer field) of a task's data set, limited and offset."""
    from rac.calibration.datasets import load_records, source_fields

    if task.get("dataset") == "livecodebench":  # hub release (or a local file in its format), graded in the sandbox
        from rac.eval.livecodebench import LiveCodeBenchError, load_livecodebench

        try:
            records = load_livecodebench(task["release"], task.get("revision"), task.get("path"))
        except LiveCodeBenchError as exc:
            raise EvaluateError(f"evaluate.tasks[{task['name']}]: {exc}") from None
        start, limit = _offset(task), task["limit"]
        problems = records[start:start + limit if limit else None]
        ids = [p["task_id"] for p in problems]
        if not problems or len(set(ids)) != len(ids):
            raise EvaluateError(f"evaluate.tasks[{task['name']}]: " + (
                f"offset {start} is past the end of the release ({len(records)} problems)" if not problems else
                f"question ids appear twice: {sorted({i for i in ids if ids.count(i) > 1})[:5]}"))
        return problems, "problem", None
    source = {"dataset": task.get("dataset"), "path": task.get("path"), "split": EVAL_SPLIT,
              "field": task.get("field"), "answer_field": task.get("answer_field"), "revision": task.get("revision")}
    if not source["dataset"] and not source["path"]:
        raise EvaluateError(f"evaluate.tasks[{task['name']}]: needs `dataset` or `path`")
    records = load_records(source)
    field, answer_field = source_fields(source)
    if task["type"] == "math" and (not field or not answer_field):
        raise EvaluateError(f"evaluate.tasks[{task['name']}]: a math task needs `field` and `answer_field`")
    start, limit = _offset(task), task["limit"]
    problems = records[start:start + limit if limit else None]
    if not problems:
        raise EvaluateError(f"evaluate.tasks[{task['name']}]: offset {start} is past the end of {records.where} "
                            f"({len(records)} records): no problems to evaluate")
    first: dict[str, int] = {}
    for index, record in enumerate(problems):
        pid = _problem_id(record, index)
        if pid in first:
            raise EvaluateError(
                f"evaluate.tasks[{task['name']}]: problem id {pid!r} appears twice "
                f"({records.location(start + first[pid])} and {records.location(start + index)}); pass@k groups "
                "samples by id, so every problem needs its own task_id / unique_id / id")
        first[pid] = index
    return problems, field or "", answer_field


def _offset(task: dict) -> int:
    """Where a task's problems start: probe tasks have an ``offset`` (schema default 0), others none."""
    return int(task["offset"]) if task["type"] == "probe" else 0


def check_problems(tasks: list[dict]) -> None:
    """Load every task's problems once before the model: empty slices and duplicate ids fail early."""
    for task in tasks:
        if task["type"] in ("math", "code", "probe"):
            load_problems(task)


def _problem_id(record: dict, index: int) -> str:
    return str(record.get("task_id") or record.get("unique_id") or record.get("id") or index)


def _problem_text(record: dict, field: str) -> str:
    if "entry_point" in record and "test" in record:  # HumanEval: ask a chat model for the whole function
        return HUMANEVAL_INSTRUCTION.format(prompt=record["prompt"])
    return str(record[field])


class _EvaluatedModel:
    """The recipe's model with every upstream artifact applied, loaded when a task needs it and freed
    (CUDA cache emptied) before a vLLM engine starts, so vLLM finds the GPU memory it was promised."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self._model: Any = None
        self.tokenizer: Any = None
        self.loads = 0

    def get(self) -> Any:
        if self._model is None:
            from rac.models.load import apply_weights, load_model

            self._model, self.tokenizer = load_model(self.ctx.settings.model.as_dict(), self.ctx.device)
            apply_weights(self._model, *[self.ctx.inputs[s] for s in ("prune", "recover", "quantize") if s in self.ctx.inputs])
            self.loads += 1
        return self._model

    def release(self) -> None:
        if self._model is None:
            return
        self._model = None
        import gc

        gc.collect()
        if str(self.ctx.device).startswith("cuda"):
            import torch

            torch.cuda.empty_cache()


def _engine(ctx: StageContext, held: _EvaluatedModel, task: dict, workdir: Path):
    from rac.engines.factory import get_engine
    from rac.engines.hf import HFEngine

    if task["engine"] == "hf":
        return HFEngine(held.get(), held.tokenizer, batch_size=int(task["batch_size"]))
    spec = ctx.settings.model.as_dict()
    if ctx.inputs:  # vLLM loads from disk: write the compressed model once
        from rac.models.compressed import write_compressed_tensors

        folder = workdir / "model"
        if not folder.exists():
            folder.mkdir(parents=True)
            if "quantize" in ctx.inputs:
                held.get().config.save_pretrained(str(folder))
                held.release()  # the FP8 weights are written from a CPU copy, not next to the GPU one
                write_compressed_tensors(_dense_copy_with(ctx, "prune", "recover", device="cpu"), ctx.inputs["quantize"], folder)
            else:
                held.get().save_pretrained(str(folder), safe_serialization=True)
            held.tokenizer.save_pretrained(str(folder))
        spec.update({"id": str(folder), "gguf_file": None, "revision": None})
    held.release()  # the HF copy leaves the GPU before vLLM sizes its KV cache
    assert ctx.settings.evaluate is not None
    options = {"batch_size": int(task["batch_size"]), "seed": ctx.settings.run.seed,
               **ctx.settings.evaluate.vllm.as_dict()}
    return get_engine(task["engine"], spec, ctx.device, spec["dtype"], options)


def _dense_copy_with(ctx: StageContext, *stages: str, dtype: str | None = None, device: str | None = None):
    from rac.models.load import apply_weights, load_model

    model, _ = load_model(ctx.settings.model.as_dict(), device or ctx.device, dtype)
    apply_weights(model, *[ctx.inputs[s] for s in stages if s in ctx.inputs])
    return model


def _generate(ctx: StageContext, engine: Any, tokenizer: Any, texts: list[str], task: dict):
    from rac.calibration.render import render_prompt
    from rac.engines.base import SamplingConfig

    render_cfg = ctx.settings.calibration.render.as_dict()
    prompts = [render_prompt(tokenizer, text, render_cfg) for text in texts]
    context = context_report(ctx.log, task["name"], engine, prompts, int(task["max_new_tokens"]))
    sampling = SamplingConfig(max_new_tokens=int(task["max_new_tokens"]), temperature=float(task["temperature"]),
                              top_p=float(task["top_p"]), seed=ctx.settings.run.seed, n=int(task["samples"]))
    start = time.perf_counter()
    outputs = engine.generate(prompts, sampling, progress=ctx.progress)
    return outputs, time.perf_counter() - start, context


def answer_spec(ctx: StageContext, task: dict, tokenizer: Any, first_problem: str | None) -> AnswerSpec:
    """The math task's answer spec, checked against the tokenizer before anything is generated."""
    from rac.calibration.render import render_text
    from rac.eval.math import REASONING_END_MARKERS, AnswerSpecError, resolve_spec

    template = str(getattr(tokenizer, "chat_template", None) or "")
    vocabulary = set(tokenizer.get_vocab()) | {m for m in REASONING_END_MARKERS if m in template}
    render_cfg = ctx.settings.calibration.render.as_dict()
    prompt = render_text(tokenizer, first_problem, render_cfg) if first_problem is not None else ""
    after = task["answer"]["after"]  # math tasks only; the schema fills the answer section
    markers = {m for m in (*REASONING_END_MARKERS, after) if isinstance(m, str) and m != "auto"}
    stripped = {m for m in markers  # what the engines' decode(skip_special_tokens=True) removes
                if m not in tokenizer.decode(tokenizer.encode(m, add_special_tokens=False), skip_special_tokens=True)}
    try:
        return resolve_spec(task["answer"], task.get("dataset"), vocabulary=vocabulary, stripped=stripped,
                            prompt=prompt)
    except AnswerSpecError as exc:
        raise EvaluateError(f"evaluate.tasks[{task['name']}].{exc}") from exc


def run_generation_task(ctx: StageContext, task: dict, engine: Any, tokenizer: Any) -> tuple[dict, list[dict]]:
    """Math or code task: generate, grade every sample, summarize."""
    from rac.eval.length import length_metrics, sample_fields
    from rac.eval.math import grade, grading_counts, summarize

    problems, field, answer_field = load_problems(task)
    texts = [_problem_text(r, field) for r in problems]
    spec = answer_spec(ctx, task, tokenizer, texts[0] if texts else None) if task["type"] == "math" else None
    outputs, wall, context = _generate(ctx, engine, tokenizer, texts, task)
    records: list[dict] = []
    extra: dict = {}
    if task["type"] == "code":
        from rac.eval.code import grade_code
        from rac.eval.sandbox import SandboxLimits, isolation_summary

        assert ctx.settings.evaluate is not None  # the evaluate stage runs only with an evaluate section
        mode = ctx.settings.evaluate.sandbox
        limits = SandboxLimits(timeout_s=float(task["timeout_s"]), memory_mb=int(task["memory_mb"]), mode=mode)
        extra["sandbox"] = isolation_summary(mode)
    for index, (record, gens) in enumerate(zip(problems, outputs)):
        for sample, gen in enumerate(gens):
            row = {"id": _problem_id(record, index), "sample": sample, "length": len(gen.completion_ids),
                   "finish_reason": gen.finish_reason,
                   **sample_fields(gen.completion_ids, gen.text, spec.after if spec is not None else None)}
            if task["type"] == "math":
                result = grade(gen.text, record[answer_field], spec)
                row.update(answer=str(record[answer_field]).rsplit("####", 1)[-1].strip(),
                           extracted=result.extracted, correct=result.correct, status=result.status)
            else:
                code = grade_code(record, gen.text, limits)
                row.update(answer=None, extracted=code.extracted, correct=code.passed, status=code.status,
                           error=code.error)
            records.append(row)
    if spec is not None:
        extra.update(answer=spec.as_dict(), **grading_counts(records))
    budget = int(task["max_new_tokens"])
    metrics = {"type": task["type"], "status": "ok", **summarize(records, wall, budget),
               "length": length_metrics(records, budget), **extra, **context}
    return metrics, records


def _probe_key(ctx: StageContext, prompts: list[list[int]], t_max: int) -> str:
    from rac.pipeline.inputs import module_code_digest

    return json_digest({"v": PROBE_VERSION, "code": module_code_digest("rac.eval.probe"), "model": ctx.model_identity,
                        "prompts": prompts, "t_max": t_max, "render": ctx.settings.calibration.render.as_dict(),
                        "dtype": ctx.settings.model.dtype}, 32)


def run_probe_task(ctx: StageContext, task: dict, model: Any, tokenizer: Any) -> tuple[dict, dict]:
    """Decode-fidelity probe; the dense half comes from the blob cache when another run made it."""
    from rac.calibration.render import render_prompt
    from rac.eval.probe import compare, dense_reference, summarize_probe

    problems, field, _ = load_problems(task)
    render_cfg = ctx.settings.calibration.render.as_dict()
    prompts = [render_prompt(tokenizer, _problem_text(r, field), render_cfg) for r in problems]
    t_max = int(task["t_max"])
    context = context_report(ctx.log, task["name"], model, prompts, t_max)
    key = _probe_key(ctx, prompts, t_max)
    hit = ctx.cache.get_blob("probe_dense", key)
    if hit is not None:
        reference, cached = hit[0], True
    else:
        dense = _dense_copy_with(ctx) if ctx.inputs else model
        reference, cached = dense_reference(dense, tokenizer, prompts, t_max, int(task["batch_size"])), False
        ctx.cache.put_blob("probe_dense", key, reference, {"t_max": t_max, "n_problems": len(prompts)})
        del dense
    arrays = compare(model, reference)
    return {"type": "probe", "status": "ok", "dense_cache_hit": cached, **summarize_probe(arrays, t_max),
            **context}, arrays


def _throughput_variant(ctx: StageContext, dtype: str | None) -> tuple[Any, dict]:
    """The compressed model on the best kernels available here, and what actually runs."""
    from rac.eval.throughput import kernelize

    if "prune" in ctx.inputs and "quantize" in ctx.inputs:  # 2:4 + FP8: torchao when it can, else FP8 alone
        model = _dense_copy_with(ctx, "prune", "recover", dtype=dtype)
        report = kernelize(model, "2:4+fp8")
        if report["kernel"] != "none":
            return model, report
        del model
        model = _dense_copy_with(ctx, "prune", "recover", "quantize", dtype=dtype)
        return model, {**kernelize(model, "fp8"), "fallback_from": "2:4+fp8", "fallback_note": report.get("note")}
    model = _dense_copy_with(ctx, "prune", "recover", "quantize", dtype=dtype)
    kernel = "fp8" if "quantize" in ctx.inputs else "2:4" if "prune" in ctx.inputs else "none"
    return model, kernelize(model, kernel)


def _vllm_throughput(ctx: StageContext, task: dict, shape: dict, held: _EvaluatedModel, workdir: Path) -> dict:
    """Generation tokens/s of the dense and the compressed model served by vLLM (FP8 via compressed-tensors;
    vLLM has no 2:4 sparse kernels any more, so 2:4 weights run as dense GEMMs there)."""
    from rac.engines.factory import get_engine
    from rac.eval.throughput import measure_generation

    assert ctx.settings.evaluate is not None
    held.get()  # the tokenizer
    vocab = len(held.tokenizer)
    variants: dict[str, dict] = {}
    for label in ("dense", "compressed"):
        if label == "compressed" and not ctx.inputs:
            break
        if label == "dense":
            held.release()
            spec = ctx.settings.model.as_dict()
            options = {"batch_size": shape["batch_size"], "seed": ctx.settings.run.seed,
                       **ctx.settings.evaluate.vllm.as_dict()}
            engine = get_engine("vllm", spec, ctx.device, spec["dtype"], options)
        else:
            engine = _engine(ctx, held, {**task, "engine": "vllm", "batch_size": shape["batch_size"]}, workdir)
        try:
            measured = measure_generation(engine, vocab, repeats=int(task["repeats"]), **shape)
        finally:
            engine.close()
        kernel = "fp8" if label == "compressed" and "quantize" in ctx.inputs else "none"
        variants[label] = {**measured, "kernel": kernel,
                           **({"note": "vLLM: 2:4 weights run dense GEMMs (no 2:4 sparse kernels)"}
                              if label == "compressed" and "prune" in ctx.inputs else {})}
    return variants


def _shape(task: dict) -> dict[str, int]:
    """A throughput task's batch shape: batch_size, prompt_len, decode_len."""
    return {k: int(task[k]) for k in ("batch_size", "prompt_len", "decode_len")}


def _speedup(variants: dict, phases: tuple[str, ...]) -> dict:
    speedup: dict[str, float | None] = {}
    if "compressed" in variants:
        for phase in phases:
            dense = variants["dense"][f"{phase}_tokens_per_s"]
            speedup[phase] = variants["compressed"][f"{phase}_tokens_per_s"] / dense if dense else None
    return speedup


def _throughput_result(ctx: StageContext, task: dict, variants: dict, phases: tuple[str, ...],
                       dtype: str | None) -> dict:
    return {"type": "throughput", "status": "ok", "backend": task["backend"], "device": ctx.device,
            "dtype": dtype or ctx.settings.model.dtype, **_shape(task), "repeats": int(task["repeats"]),
            "variants": variants, "speedup": _speedup(variants, phases)}


def run_throughput_task(ctx: StageContext, task: dict, held: _EvaluatedModel | None = None,
                        workdir: Path | None = None) -> dict:
    """Dense vs compressed tokens/s (bfloat16 models on CUDA, the recipe dtype on CPU): per phase on
    PyTorch kernels (``backend: torch``), or end-to-end generation served by vLLM (``backend: vllm``)."""
    if task["backend"] != "vllm":
        return run_torch_throughput_tasks(ctx, [task], held)[task["name"]]
    if held is None or workdir is None:
        raise EvaluateError(f"evaluate.tasks[{task['name']}]: backend vllm needs the evaluated model and a workdir")
    variants = _vllm_throughput(ctx, task, _shape(task), held, workdir)
    return _throughput_result(ctx, task, variants, ("generation",), None)


def run_torch_throughput_tasks(ctx: StageContext, tasks: list[dict],
                               held: _EvaluatedModel | None = None) -> dict[str, dict]:
    """``backend: torch`` throughput tasks measured together, {task name: metrics}: each variant (the
    dense model, then the compressed one on its best kernels here) is loaded once and every task's
    shape is timed on it, so N shapes cost two model loads instead of 2N. A task's ``seconds`` is its own
    timing plus an equal share of the loads (``load_seconds``, shared by ``measured_with``)."""
    from rac.eval.throughput import kernelize, measure_phases

    dtype = "bfloat16" if ctx.device.startswith("cuda") else None
    if held is not None:
        held.release()  # each variant below is loaded on its own; the evaluated copy leaves the device
    measured: dict[str, dict[str, dict]] = {t["name"]: {} for t in tasks}
    own = {t["name"]: 0.0 for t in tasks}
    loading = 0.0
    for label in ("dense", "compressed"):
        if label == "compressed" and not ctx.inputs:
            break
        start = time.perf_counter()
        if label == "dense":
            variant = _dense_copy_with(ctx, dtype=dtype)
            report = kernelize(variant, "none")
        else:
            variant, report = _throughput_variant(ctx, dtype)
        loading += time.perf_counter() - start
        for task in tasks:
            start = time.perf_counter()
            measured[task["name"]][label] = {**measure_phases(variant, repeats=int(task["repeats"]), **_shape(task)),
                                             **report}
            own[task["name"]] += time.perf_counter() - start
        del variant
    names = [t["name"] for t in tasks]
    share = loading / len(tasks)
    results = {}
    for task in tasks:
        result = _throughput_result(ctx, task, measured[task["name"]], ("prefill", "decode"), dtype)
        result.update(seconds=round(own[task["name"]] + share, 3), load_seconds=round(share, 3), measured_with=names)
        results[task["name"]] = result
    return results


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, default=str) + "\n" for row in rows))


def run(ctx: StageContext) -> dict:
    from safetensors.torch import save_file

    from rac.eval.lm_eval import run_lm_eval

    evaluate = ctx.settings.evaluate
    if evaluate is None:
        raise EvaluateError("the evaluate stage needs an evaluate section")
    tasks = [task_settings(evaluate, t) for t in evaluate.tasks]
    names = [t["name"] for t in tasks]
    if len(set(names)) != len(names):
        raise EvaluateError(f"evaluate.tasks: task names must be unique, got {names}")
    check_problems(tasks)
    if any(t["type"] == "code" for t in tasks):  # fail closed before loading the model
        from rac.eval.sandbox import select_backend

        select_backend(evaluate.sandbox)
    held = _EvaluatedModel(ctx)
    held.get()  # the tokenizer, and a load error before any task runs
    out = Path(ctx.out_dir)
    results: dict[str, dict] = {}
    torch_throughput = [t for t in tasks if t["type"] == "throughput" and t["backend"] != "vllm"]
    torch_throughput_names = {t["name"] for t in torch_throughput}
    with tempfile.TemporaryDirectory(prefix="rac-eval-") as workdir:
        for task in tasks:
            if task["name"] in results:  # measured with an earlier throughput task
                continue
            ctx.log.info("evaluate task %s (%s)", task["name"], task["type"])
            start = time.perf_counter()
            if task["name"] in torch_throughput_names:  # every torch shape on one load per variant
                results.update(run_torch_throughput_tasks(ctx, torch_throughput, held))
                continue
            if task["type"] in ("math", "code"):
                engine = _engine(ctx, held, task, Path(workdir))
                try:
                    metrics, records = run_generation_task(ctx, task, engine, held.tokenizer)
                finally:
                    engine.close()
                _write_jsonl(out / "records" / f"{task['name']}.jsonl", records)
            elif task["type"] == "probe":
                metrics, arrays = run_probe_task(ctx, task, held.get(), held.tokenizer)
                (out / "probe").mkdir(exist_ok=True)
                save_file({k: v.contiguous() for k, v in arrays.items()}, str(out / "probe" / f"{task['name']}.safetensors"))
                metrics["arrays"] = f"probe/{task['name']}.safetensors"
            elif task["type"] == "lm_eval":
                metrics = run_lm_eval(held.get(), held.tokenizer, task["task"], limit=task["limit"],
                                      batch_size=int(task["batch_size"]), num_fewshot=task["num_fewshot"])
            elif task["type"] == "throughput":
                metrics = run_throughput_task(ctx, task, held, Path(workdir))
            else:
                raise EvaluateError(f"evaluate.tasks[{task['name']}]: unknown type {task['type']!r}")
            metrics["seconds"] = round(time.perf_counter() - start, 3)
            results[task["name"]] = metrics
    atomic_write_json(out / "metrics.json", results)
    return results


STAGE = Stage(
    name="evaluate",
    needs=("prune", "recover", "quantize"),
    reads=("model", "evaluate", "calibration.render", "run.seed"),
    version="3",  # 2: strict answer specs, trusted code runner; 3: length metrics, probe termination
    run=run,
    enabled=lambda r: bool((r.get("evaluate") or {}).get("tasks")),
    description="benchmarks, decode-fidelity probe and throughput of the compressed model",
    device_dependent=True,  # every task reports timings (tokens/s, seconds) measured on this machine
)
