"""One definition of metric keys: evaluate writes them, the metrics schema requires them."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from rac.eval.math import summarize
from rac.eval.probe import summarize_probe
from rac.report import metric_keys as mk

SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "metrics.schema.json").read_text())


def test_generation_keys_are_what_evaluate_writes_and_the_schema_requires():
    records = [{"id": "a", "correct": True, "length": 10, "finish_reason": "stop"},
               {"id": "b", "correct": False, "length": 32, "finish_reason": "length"}]
    written = summarize(records, wall_seconds=2.0, max_new_tokens=32)
    assert set(mk.GENERATION_KEYS) <= set(written)
    assert set(mk.GENERATION_KEYS) <= set(SCHEMA["$defs"]["generation_metrics"]["required"])


def test_probe_keys_are_what_the_probe_writes_and_the_schema_requires():
    from rac.eval.probe import END_MARKERS

    arrays = {"offsets": torch.tensor([0, 6]), "prompt_len": torch.tensor([3]),
              **{k: torch.rand(6) for k in ("abs_error", "rel_error", "nll", "dense_nll")}}
    for name in END_MARKERS:  # the termination probe's per-rollout arrays (one rollout ending at token 5)
        arrays.update({f"{name}_pos": torch.tensor([5]), f"{name}_prob_at_dense_end": torch.rand(1),
                       f"{name}_rank_at_dense_end": torch.tensor([0])})
    written = summarize_probe(arrays, t_max=4)
    assert set(mk.PROBE_KEYS) <= set(written)
    assert set(mk.PROBE_KEYS) <= set(SCHEMA["$defs"]["probe_metrics"]["required"])


def test_headline_flattens_throughput_and_drops_missing():
    metrics = {"type": "throughput", "speedup": {"decode": 1.2, "prefill": None},
               "variants": {"dense": {"decode_tokens_per_s": 100.0}, "compressed": {"decode_tokens_per_s": 120.0}}}
    assert mk.headline(metrics) == {"decode_speedup": 1.2, "decode_tokens_per_s": 120.0,
                                    "dense_decode_tokens_per_s": 100.0}
    math = {"type": "math", "accuracy": 0.5, "accuracy_se": 0.1, "tokens_per_second": 9.0, "mean_length": None}
    assert mk.headline(math) == {"accuracy": 0.5, "accuracy_se": 0.1, "tokens_per_second": 9.0}
