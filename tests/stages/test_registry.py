"""Which stages a recipe compiles to, with the real stage registry."""

from __future__ import annotations

import pytest

from rac.app import STAGE_ORDER, load_stages
from rac.pipeline.cache import Cache
from rac.pipeline.plan import build_plan
from rac.recipe import load_and_validate

HEAD = "version: 1\nmodel: {id: smollm2-135m}\n"
EVAL = "evaluate:\n  tasks: [{name: probe, type: probe, dataset: gsm8k_test, limit: 2}]\n"


@pytest.mark.parametrize(("body", "expected"), [
    ("calibration: {kind: rac}\n" + EVAL, ["evaluate"]),  # dense: no rollouts, no Hessians
    ("calibration: {kind: rac}\nprune: {sparsity: 0.5}\n" + EVAL, ["rollout", "hessian", "prune", "evaluate"]),
    ("calibration: {kind: prompt}\nprune: {sparsity: 0.5}\n", ["hessian", "prune"]),
    ("calibration: {kind: text, sources: [{dataset: c4}]}\nprune: {pattern: '2:4'}\nquantize: {}\n"
     "export: {format: compressed-tensors}\n", ["hessian", "prune", "quantize", "export"]),
])
def test_plan_stages(tmp_path, body, expected):
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + body)
    recipe = load_and_validate(path).data
    plan = build_plan(recipe, Cache(tmp_path / "cache"), "model-id", load_stages())
    assert plan.names == expected
    assert [s.name for s in load_stages()] == list(STAGE_ORDER)


def test_sparsity_change_keeps_upstream_fingerprints(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(HEAD + "calibration: {kind: rac}\nprune: {sparsity: 0.5}\n" + EVAL)
    a = load_and_validate(path).data
    b = load_and_validate(path, ["prune.sparsity=0.3"]).data
    plan_a, plan_b = (build_plan(r, Cache(tmp_path / "c"), "m", load_stages()) for r in (a, b))
    fps = {p.name: (p.fingerprint, plan_b.get(p.name).fingerprint) for p in plan_a}
    assert fps["rollout"][0] == fps["rollout"][1]
    assert fps["prune"][0] != fps["prune"][1] and fps["evaluate"][0] != fps["evaluate"][1]
