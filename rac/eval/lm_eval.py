"""Any lm-evaluation-harness task, run in-process on the already loaded (compressed) model.

The model object is wrapped in ``lm_eval.models.huggingface.HFLM(pretrained=model, tokenizer=...)``
and passed to ``lm_eval.simple_evaluate``, so the weights evaluated are exactly the ones the
pipeline produced (no export round trip). Task data normally comes from the Hugging Face hub; when
it cannot be fetched (offline machine, ``HF_DATASETS_OFFLINE``) the task is reported with
``status: "skipped"`` and the reason instead of failing the whole evaluation.
"""

from __future__ import annotations

import functools
import logging
import time

from rac.errors import RacError

log = logging.getLogger(__name__)

_OFFLINE_HINTS = ("offline", "couldn't reach", "could not reach", "connection", "network", "resolve",
                  "max retries", "localentrynotfound", "not found in cache", "cannot find the requested files")
_PRIMARY = ("acc", "acc_norm", "exact_match", "pass@1", "f1", "mcc", "word_perplexity")


class LMEvalTaskError(RacError, ValueError):
    """The recipe names an lm-eval task that the installed harness does not know."""


def _is_offline_failure(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        name = type(seen).__name__.lower()
        text = f"{name}: {seen}".lower()
        if isinstance(seen, (ConnectionError, TimeoutError)) or any(h in text for h in _OFFLINE_HINTS):
            return True
        if name in ("datasetnotfounderror", "offlinemodeisenabled", "httperror", "hfhubhttperror"):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@functools.lru_cache(maxsize=1)
def task_manager():
    """The harness's task index (building it scans every task yaml: tens of seconds, so once)."""
    from lm_eval.tasks import TaskManager

    return TaskManager()


def known_task(task: str) -> bool:
    """Whether the installed lm-eval harness defines ``task`` (task, group or tag)."""
    return bool(task_manager().match_tasks([task]))


def _task_metrics(results: dict, task: str) -> dict[str, float]:
    scores = results.get("results", {}).get(task, {})
    out: dict[str, float] = {}
    for key, value in scores.items():
        if not isinstance(value, (int, float)) or isinstance(value, bool) or key == "alias":
            continue
        metric, _, filt = key.partition(",")
        out[metric if filt in ("", "none") else f"{metric},{filt}"] = float(value)
    return out


def primary_metric(metrics: dict[str, float]) -> tuple[str | None, float | None, float | None]:
    """(name, value, stderr) of the headline metric among ``metrics``."""
    for name in (*_PRIMARY, *sorted(metrics)):
        if name in metrics and not name.endswith("_stderr"):
            return name, metrics[name], metrics.get(f"{name}_stderr")
    return None, None, None


def run_lm_eval(model, tokenizer, task: str, limit: float | None = None, batch_size: int = 8,
                num_fewshot: int | None = None, seed: int = 0) -> dict:
    """Metrics of ``task`` on ``model``: status "ok" with scores, or "skipped" with the reason."""
    try:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
    except ImportError as exc:
        return {"type": "lm_eval", "task": task, "status": "skipped",
                "reason": f"lm-eval is not installed ({exc}); pip install 'rac[eval]'"}
    if not known_task(task):
        raise LMEvalTaskError(f"evaluate.tasks: lm-eval does not know the task {task!r}")
    start = time.perf_counter()
    try:
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        results = simple_evaluate(model=lm, tasks=[task], limit=limit, num_fewshot=num_fewshot,
                                  log_samples=False, task_manager=task_manager(), random_seed=seed, numpy_random_seed=seed,
                                  torch_random_seed=seed, fewshot_random_seed=seed)
    except Exception as exc:
        if not _is_offline_failure(exc):
            raise
        reason = f"task data could not be loaded (offline?): {type(exc).__name__}: {str(exc)[:300]}"
        log.warning("lm-eval task %s skipped: %s", task, reason)
        return {"type": "lm_eval", "task": task, "status": "skipped", "reason": reason}
    if not results:
        return {"type": "lm_eval", "task": task, "status": "skipped", "reason": "lm-eval returned no results"}
    metrics = _task_metrics(results, task)
    name, value, stderr = primary_metric(metrics)
    return {
        "type": "lm_eval", "task": task, "status": "ok", "metrics": metrics, "primary_metric": name,
        "accuracy": value, "accuracy_se": stderr, "limit": limit,
        "wall_seconds": round(time.perf_counter() - start, 3),
    }
