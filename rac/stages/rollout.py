"""Rollout stage: sample the dense (or off-policy source) model's own chains of thought.

Prompt selection rule (per source; each gets ``weight / sum(weights)`` of the budget limits):
- token limit: round 1 takes ``ceil(share / (samples * (mean prompt len + t_max / 2)))`` prompts,
  i.e. it expects completions to use half of ``t_max``; top-up rounds (``MAX_ROUNDS`` rounds in all)
  measure the kept tokens per prompt so far and take ``ceil(1.1 * missing / measured)`` more, until
  the kept traces cover the share or the source runs out. Some overshoot is expected: the mix drops
  whole traces beyond the share.
- prompt limit: ``share`` prompts; top-ups take ``ceil(missing / max(kept rate, 0.25))`` more when
  drops leave prompts without a kept trace. With both limits a source takes the smaller count.
Prompts longer than ``max_prompt_tokens`` are skipped. Rollouts that hit ``t_max`` with
``on_truncated: drop`` and wrong answers with ``filter_correct`` stay in the artifact marked ``dropped``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rac.pipeline.stage import Stage, StageContext

if TYPE_CHECKING:
    from rac.recipe.settings import RolloutSettings

MAX_ROUNDS = 4


def _source_state(ctx: StageContext, tokenizer: Any) -> list[dict]:
    from rac.calibration.render import render_prompt
    from rac.calibration.sources import source_items, source_shares

    calib = ctx.settings.calibration
    sources = [source.as_dict() for source in calib.sources]
    shares = source_shares({"sources": sources, "budget": calib.budget.as_dict()})
    limit, render_cfg = calib.max_prompt_tokens, calib.render.as_dict()
    states = []
    for index, (source, share) in enumerate(zip(sources, shares)):
        items = source_items(source, index, calib.seed)

        def rendered(items=items):  # lazily render in seeded order, skipping over-long prompts
            for item in items:
                ids = render_prompt(tokenizer, item.text, render_cfg)
                if not limit or len(ids) <= limit:
                    yield item, ids

        states.append({"share": share, "todo": rendered(), "exhausted": share.empty,
                       "prompts": 0, "prompt_tokens": 0, "kept_tokens": 0, "kept_prompts": set()})
    return states


def _wanted(state: dict, samples: int, t_max: int, round_index: int) -> int:
    """How many more prompts this source needs (see the module docstring)."""
    share = state["share"]
    if state["exhausted"]:
        return 0
    counts = []
    if share.prompts is not None:
        missing = share.prompts - len(state["kept_prompts"])
        rate = len(state["kept_prompts"]) / state["prompts"] if state["prompts"] else 1.0
        counts.append(0 if missing <= 0 else math.ceil(missing / max(rate, 0.25)))
    if share.tokens is not None:
        missing = share.tokens - state["kept_tokens"]
        if missing <= 0:
            counts.append(0)
        elif round_index == 0 or not state["kept_tokens"]:
            mean_prompt = state["prompt_tokens"] / state["prompts"] if state["prompts"] else 128.0
            counts.append(max(1, math.ceil(missing / (samples * (mean_prompt + t_max / 2)))))
        else:
            counts.append(max(1, math.ceil(1.1 * missing / (state["kept_tokens"] / state["prompts"]))))
    return min(counts)


def _take(state: dict, count: int) -> list[tuple[Any, list[int]]]:
    taken = []
    for _ in range(count):
        nxt = next(state["todo"], None)
        if nxt is None:
            state["exhausted"] = True
            break
        taken.append(nxt)
    return taken


def _verdict(text: str, answer: Any, finish: str, rollout_cfg: RolloutSettings) -> tuple[bool | None, str | None]:
    """(correct or None when ungradable, drop reason or None)."""
    correct = None
    if answer is not None:
        try:
            from rac.eval.math import grade

            correct = grade(text, answer).correct
        except ImportError as exc:  # math-verify missing: grading is optional unless filtering
            if rollout_cfg.filter_correct:
                raise ValueError(f"calibration.rollout.filter_correct needs math-verify: {exc}") from exc
    if finish == "length" and rollout_cfg.on_truncated == "drop":
        return correct, "truncated"
    if rollout_cfg.filter_correct and correct is not True:
        return correct, "incorrect"
    return correct, None


def run(ctx: StageContext) -> dict:
    """Select prompts, generate, grade, and write rollouts.jsonl / tokens.safetensors / provenance.json."""
    from rac.calibration.rollouts import RolloutSet, summarize, write_rollouts
    from rac.engines.base import SamplingConfig
    from rac.engines.factory import get_engine

    settings = ctx.settings
    calib = settings.calibration
    cfg = calib.rollout
    on_policy = cfg.model is None
    source_model = (settings.model if cfg.model is None else cfg.model).as_dict()
    engine_name = cfg.engine
    options = {"batch_size": cfg.batch_size, **cfg.vllm.as_dict()}
    sampling = SamplingConfig(max_new_tokens=cfg.t_max, temperature=float(cfg.temperature), top_p=float(cfg.top_p),
                              top_k=cfg.top_k, seed=cfg.seed, n=cfg.samples_per_prompt)
    engine = get_engine(engine_name, source_model, ctx.device, source_model["dtype"], options)
    try:
        states = _source_state(ctx, engine.tokenizer)
        records: list[dict] = []
        prompt_ids: list[list[int]] = []
        completions: list[list[int]] = []
        for round_index in range(MAX_ROUNDS):
            batch = [(state, item, ids) for state in states
                     for item, ids in _take(state, _wanted(state, sampling.n, sampling.max_new_tokens, round_index))]
            if not batch:
                break
            ctx.log.info("rollout round %d: %d prompts x %d samples", round_index + 1, len(batch), sampling.n)
            round_sampling = replace(sampling, seed=sampling.seed + 7919 * round_index)  # fresh noise per round
            outputs = engine.generate([ids for _, _, ids in batch], round_sampling, progress=ctx.progress)
            for (state, item, ids), gens in zip(batch, outputs):
                state["prompts"] += 1
                state["prompt_tokens"] += len(ids)
                for sample, gen in enumerate(gens):
                    correct, dropped = _verdict(gen.text, item.answer, gen.finish_reason, cfg)
                    if not dropped:
                        state["kept_tokens"] += len(ids) + len(gen.completion_ids)
                        state["kept_prompts"].add(len(prompt_ids))
                    records.append({"prompt_index": len(prompt_ids), "sample": sample, "source": item.source,
                                    "record": item.record, "problem": item.text, "answer": item.answer,
                                    "text": gen.text, "finish_reason": gen.finish_reason, "prompt_len": len(ids),
                                    "completion_len": len(gen.completion_ids), "correct": correct,
                                    "dropped": dropped, "round": round_index})
                    completions.append(list(gen.completion_ids))
                prompt_ids.append(list(ids))
        provenance = {"model": {k: source_model[k] for k in ("id", "revision", "gguf_file", "dtype")},
                      "model_identity": ctx.model_identity if on_policy else _identity(source_model),
                      "on_policy": on_policy, "engine": engine_name, "engine_version": engine.version(),
                      "sampling": sampling.to_dict(), "seed": sampling.seed, "device": ctx.device,
                      "render": calib.render.as_dict(), "budget": calib.budget.as_dict(),
                      "on_truncated": cfg.on_truncated, "filter_correct": cfg.filter_correct,
                      "calibration_seed": calib.seed,
                      "shares": [{"share": s["share"].to_dict(), "kept_tokens": s["kept_tokens"],
                                  "kept_prompts": len(s["kept_prompts"]), "exhausted": s["exhausted"]} for s in states]}
    finally:
        engine.close()
    rollouts = RolloutSet(records, prompt_ids, completions, provenance)
    write_rollouts(ctx.out_dir, rollouts)
    summary = summarize(rollouts, n_samples=0)
    return {k: summary[k] for k in ("rollouts", "prompts", "kept", "dropped", "finish_reasons", "accuracy",
                                    "prompt_tokens", "completion_tokens", "completion_len")}


def _identity(model_spec: dict) -> str:
    """Identity of the off-policy source model (for provenance)."""
    from rac.models.load import resolve_model

    return resolve_model(model_spec).identity


def summarize_rollouts(artifact_dir: Path | str, n_samples: int = 3) -> dict:
    """A few sample texts and length statistics of a rollout artifact (``rac rollouts show``)."""
    from rac.calibration.rollouts import read_rollouts, summarize

    return summarize(read_rollouts(Path(artifact_dir)), n_samples=n_samples)


STAGE = Stage(
    name="rollout",
    needs=(),
    reads=("model", "calibration.sources", "calibration.budget", "calibration.render", "calibration.rollout",
           "calibration.max_prompt_tokens", "calibration.seed"),
    version="1",
    run=run,
    # rollouts only feed the Hessians: a dense (evaluation-only) recipe never generates them
    enabled=lambda r: r["calibration"]["kind"] == "rac" and bool(r.get("prune")),
    description="sample on-policy chains of thought for the calibration prompts",
)
