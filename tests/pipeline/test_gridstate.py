"""Grid state from run directories, shared-prefix waves and per-cell resources (stand-in stages)."""

from __future__ import annotations

import json

from standin import STAGES, loaded

from rac.pipeline.cache import Cache
from rac.pipeline.gridstate import PrefixJob, cell_state, shared_prefix_waves
from rac.pipeline.plan import build_plan
from rac.pipeline.run import run_recipe
from rac.workflow.executors import cell_resources


def _recipe(tmp_path, n: int, factor: int, report: str | None = None) -> dict:
    return {"gen": {"n": n}, "scale": {"factor": factor}, "report": report, "counts": str(tmp_path / "counts")}


def _plans(cache: Cache, recipes: list[dict]):
    return [build_plan(r, cache, "m", STAGES) for r in recipes]


def test_shared_stages_run_once_in_waves(tmp_path):
    cache = Cache(tmp_path / "cache")
    a, b, c = _recipe(tmp_path, 3, 2, "x"), _recipe(tmp_path, 3, 2, "y"), _recipe(tmp_path, 3, 5)
    plans = _plans(cache, [a, b, c])
    # a and b share gen and scale, c shares only gen: one job computes both, once
    assert shared_prefix_waves(plans) == [[PrefixJob(0, "scale", plans[0].get("scale").fingerprint)]]
    # d and e share a scale of their own on top of the gen a/b claim: it waits for that gen (wave 1)
    d, e = _recipe(tmp_path, 3, 7), _recipe(tmp_path, 3, 7)
    plans = _plans(cache, [a, b, d, e])
    waves = shared_prefix_waves(plans)
    assert [[(j.cell, j.stop_after) for j in wave] for wave in waves] == [[(0, "scale")], [(2, "scale")]]
    # nothing shared: no prefix jobs; everything cached: none either
    assert shared_prefix_waves(_plans(cache, [_recipe(tmp_path, 1, 1), _recipe(tmp_path, 2, 1)])) == []
    run_recipe(loaded(a), STAGES, "m", cache, tmp_path / "run-a")
    assert shared_prefix_waves(_plans(cache, [a, b])) == []


def test_cell_state_from_status(tmp_path):
    cache = Cache(tmp_path / "cache")
    recipe = _recipe(tmp_path, 3, 2, "x")
    run_dir = tmp_path / "cell"
    assert cell_state("c", build_plan(recipe, cache, "m", STAGES), run_dir).state == "pending"
    run_recipe(loaded(recipe), STAGES, "m", cache, run_dir)
    state = cell_state("c", build_plan(recipe, cache, "m", STAGES), run_dir)
    assert state.state == "done" and dict(state.stages) == {"gen": "done", "scale": "done", "report": "done"}
    # a changed recipe: its scale and report are new work, gen is still done
    other = cell_state("c", build_plan(_recipe(tmp_path, 3, 9, "x"), cache, "m", STAGES), run_dir)
    assert other.state == "partial" and dict(other.stages)["scale"] == "pending"
    # an emptied cache makes done stages pending again
    cache.remove("scale")
    assert cell_state("c", build_plan(recipe, cache, "m", STAGES), run_dir).state == "partial"
    status = json.loads((run_dir / "status.json").read_text())
    status["gen"]["status"] = "failed"
    (run_dir / "status.json").write_text(json.dumps(status))
    assert cell_state("c", build_plan(recipe, cache, "m", STAGES), run_dir).state == "failed"
    status["gen"]["status"] = "running"
    (run_dir / "status.json").write_text(json.dumps(status))
    assert cell_state("c", build_plan(recipe, cache, "m", STAGES), run_dir).state == "running"


def test_cell_resources():
    vllm = {"engine": "vllm", "vllm": {"tensor_parallel_size": 2, "data_parallel_size": 2}}
    assert cell_resources({"run": {"device": "cuda"}, "calibration": {"rollout": vllm}}) == {"gpus": 4, "cpus": 1}
    # a Ray task leaves the replicas' GPUs to the replica actors
    assert cell_resources({"run": {"device": "cuda"}, "calibration": {"rollout": vllm}}, on_ray=True)["gpus"] == 1
    assert cell_resources({"run": {"device": "cuda"}, "evaluate": {"engine": "hf"}}, cpus=8) == {"gpus": 1, "cpus": 8}
    assert cell_resources({"run": {"device": "cpu"}, "calibration": {"rollout": vllm}})["gpus"] == 0
    assert cell_resources({"evaluate": {"engine": "vllm", "vllm": {"tensor_parallel_size": 2}}})["gpus"] == 2
