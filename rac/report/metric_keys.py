"""The one definition of the metric keys evaluate writes and grid summaries / reports read.

``rac.stages.evaluate`` (via ``rac.eval.math.summarize`` and ``rac.eval.probe.summarize_probe``)
writes these keys per task into ``metrics.json``; ``schemas/metrics.schema.json`` requires them;
``tests/report/test_metric_keys.py`` checks all three agree, so a renamed key fails a test instead of
silently vanishing from a summary (as ``acc`` / ``stderr`` / ``tokens_per_s`` once did).
"""

from __future__ import annotations

from typing import Any

# generation tasks (type math / code): rac.eval.math.summarize
ACCURACY = "accuracy"
ACCURACY_SE = "accuracy_se"
MEAN_LENGTH = "mean_length"
TRUNCATED_FRACTION = "truncated_fraction"
TOKENS_PER_SECOND = "tokens_per_second"
WALL_SECONDS = "wall_seconds"
MAX_NEW_TOKENS = "max_new_tokens"
N_PROBLEMS = "n_problems"
SAMPLES = "samples"
# probe tasks: rac.eval.probe.summarize_probe
DECODE_NLL = "decode_nll"
DECODE_ERROR = "decode_error"
PROMPT_ERROR = "prompt_error"
DENSE_DECODE_NLL = "dense_decode_nll"
MEAN_DECODE_LENGTH = "mean_decode_length"
# every task: the evaluate stage's wall time for the task
SECONDS = "seconds"
# the recover stage's summary (stages.recover.summary in metrics.json): its cost next to prune's seconds
TOKENS_TRAINED = "tokens_trained"
STEPS = "steps"
KL_INITIAL = "kl_initial"
KL_FINAL = "kl_final"
KL_RATIO = "kl_ratio"
RECOVER_KEYS = (SECONDS, TOKENS_TRAINED, STEPS, KL_INITIAL, KL_FINAL, KL_RATIO)

GENERATION_KEYS = (N_PROBLEMS, SAMPLES, ACCURACY, ACCURACY_SE, MEAN_LENGTH, TRUNCATED_FRACTION,
                   WALL_SECONDS, TOKENS_PER_SECOND, MAX_NEW_TOKENS)
PROBE_KEYS = (DECODE_NLL, DECODE_ERROR, PROMPT_ERROR, DENSE_DECODE_NLL, MEAN_DECODE_LENGTH)
LM_EVAL_KEYS = (ACCURACY, ACCURACY_SE)
# throughput tasks nest per-phase numbers: (flat key, path inside the task's metrics)
THROUGHPUT_PATHS = (("decode_speedup", ("speedup", "decode")), ("prefill_speedup", ("speedup", "prefill")),
                    ("decode_tokens_per_s", ("variants", "compressed", "decode_tokens_per_s")),
                    ("dense_decode_tokens_per_s", ("variants", "dense", "decode_tokens_per_s")))

# what a grid summary shows per task (in this order)
HEADLINE_KEYS = {
    "math": (ACCURACY, ACCURACY_SE, MEAN_LENGTH, TRUNCATED_FRACTION, TOKENS_PER_SECOND, SECONDS),
    "code": (ACCURACY, ACCURACY_SE, MEAN_LENGTH, TRUNCATED_FRACTION, TOKENS_PER_SECOND, SECONDS),
    "probe": (DECODE_NLL, DENSE_DECODE_NLL, DECODE_ERROR, PROMPT_ERROR, MEAN_DECODE_LENGTH),
    "lm_eval": (ACCURACY, ACCURACY_SE),
    "throughput": tuple(key for key, _ in THROUGHPUT_PATHS),
}


def headline(task_metrics: dict) -> dict[str, float]:
    """The numeric headline metrics of one task's metrics (flat keys; absent or null ones left out)."""
    kind = str(task_metrics.get("type", ""))
    out: dict[str, float] = {}
    paths = dict(THROUGHPUT_PATHS) if kind == "throughput" else {}
    for key in HEADLINE_KEYS.get(kind, ()):
        value: Any = task_metrics
        for part in paths.get(key, (key,)):
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[key] = float(value)
    return out
