"""Stage ``recover``: mask-preserving distillation of the pruned model towards the dense one.

Optional, after prune (``recover`` section; absent, null or ``enabled: false`` = skipped, and later
stages get prune's artifact exactly as without it). The student is the recipe's model with prune's
weights, the teacher the dense model; the data are the dense model's own rollouts (the rollout stage's
artifact; the last ``heldout`` traces are kept apart to measure the KL before and after). The loss is
the forward token-level KL(dense || pruned) on completion tokens (``rac.algorithms.distill`` says
why), pruned zeros stay zero, and training stops at ``recover.tokens`` loss tokens.
Memory and the top-k teacher for 7B+ models: see ``rac.models.recover``.

Artifact, like prune's: ``weights.safetensors`` (every trained parameter, by state-dict name: with
``train: pruned`` exactly prune's tensors, recovered) + ``report.json`` (summary, training curve and
prune's per-module rows). Later stages overlay prune's then recover's weights.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

from rac.engine.cache import atomic_write_json
from rac.engine.stage import Stage, StageContext
from rac.errors import RacError


class RecoverError(RacError, ValueError):
    """A recover section that cannot run on this recipe's artifacts (the message names the key)."""


def _changed_names(prune_dir: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(prune_dir / "weights.safetensors"), framework="pt") as f:
        return list(f.keys())


def run(ctx: StageContext) -> dict:
    from safetensors.torch import save_file

    from rac.calibration.rollouts import read_rollouts
    from rac.models.load import apply_weights, load_model
    from rac.models.recover import (
        DistillConfig,
        distill,
        precomputed_teacher,
        streamed_teacher,
        traces_of,
        trainable_parameters,
    )

    start = time.perf_counter()
    cfg = ctx.settings.recover
    if cfg is None:
        raise RecoverError("the recover stage needs a recover section")
    prune_dir, rollout_dir = ctx.inputs.get("prune"), ctx.inputs.get("rollout")
    if prune_dir is None:
        raise RecoverError("recover: needs the prune stage's artifact (add a prune section)")
    if rollout_dir is None:
        raise RecoverError("recover: needs the rollout stage's traces (calibration.kind: rac)")
    traces = traces_of(read_rollouts(Path(rollout_dir)), cfg.max_seq_len)
    if len(traces) <= cfg.heldout:
        raise RecoverError(f"recover.heldout: {cfg.heldout} held-out traces leave none to train on "
                           f"(the rollout artifact has {len(traces)} kept traces)")
    train, held = traces[:-cfg.heldout], traces[-cfg.heldout:]
    spec = ctx.settings.model.as_dict()
    student, tokenizer = load_model(spec, ctx.device)
    apply_weights(student, prune_dir)
    changed = _changed_names(Path(prune_dir))
    trainable = trainable_parameters(student, changed, cfg.train)
    if not trainable:
        raise RecoverError(f"recover.train: {cfg.train!r} selects no parameter of the pruned model")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    teacher_model, _ = load_model(spec, ctx.device)
    teacher_model.eval()
    dc = DistillConfig(cfg.tokens, cfg.lr, cfg.batch_size, cfg.weight_decay, cfg.temperature, cfg.top_k,
                       cfg.loss_on_prompt, cfg.seed)
    if cfg.top_k is not None:  # teacher once over every trace, then out of memory
        teacher = precomputed_teacher(teacher_model, traces, cfg.temperature, cfg.top_k, cfg.batch_size,
                                      cfg.loss_on_prompt, ctx.device, pad)
        del teacher_model
        gc.collect()
    else:
        teacher = streamed_teacher(teacher_model, cfg.temperature, None)
    handle = ctx.progress.task("recover tokens", cfg.tokens)
    result = distill(student, teacher, trainable, train, held, dc, ctx.device, pad, on_step=handle.advance)
    handle.close()
    if result.revived:
        raise RecoverError(f"recover: {result.revived} pruned weights became nonzero (masked update failed)")
    save_file({name: p.detach().cpu().contiguous() for name, p in trainable.items()},
              str(ctx.out_dir / "weights.safetensors"))
    seconds = round(time.perf_counter() - start, 3)
    summary = {
        "seconds": seconds,
        "seconds_train": round(result.seconds_train, 3),
        "tokens_trained": result.tokens_trained,
        "tokens_budget": cfg.tokens,
        "steps": result.steps,
        "epochs": result.epochs,
        "kl_initial": result.kl_initial,
        "kl_final": result.kl_final,
        "kl_ratio": result.kl_final / result.kl_initial if result.kl_initial > 0 else None,
        "heldout_traces": len(held),
        "heldout_tokens": result.heldout_tokens,
        "train_traces": len(train),
        "trainable_tensors": len(trainable),
        "trainable_params": sum(p.numel() for p in trainable.values()),
        "seconds_per_1k_tokens": (round(1000 * result.seconds_train / result.tokens_trained, 3)
                                  if result.tokens_trained else None),
        "teacher": f"top-{cfg.top_k}" if cfg.top_k is not None else "streamed",
    }
    prune_report = Path(prune_dir) / "report.json"
    modules = json.loads(prune_report.read_text()).get("modules") if prune_report.is_file() else None
    atomic_write_json(ctx.out_dir / "report.json", {"summary": summary, "curve": result.curve, "modules": modules})
    ctx.log.info("recover: %d tokens in %d steps, held-out KL %.4f -> %.4f", result.tokens_trained, result.steps,
                 result.kl_initial, result.kl_final)
    return summary


def enabled(recipe: dict) -> bool:
    """A recover section that is present, not ``enabled: false``, with a prune section to recover from."""
    section = recipe.get("recover")
    if not section or not recipe.get("prune"):
        return False
    return section.get("enabled") is not False


STAGE = Stage(
    name="recover",
    needs=("rollout", "prune"),
    reads=("model", "recover"),
    version="1",
    run=run,
    enabled=enabled,
    description="mask-preserving distillation of the pruned model towards the dense one (KL on its rollouts)",
)
