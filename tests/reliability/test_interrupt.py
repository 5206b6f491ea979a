"""SIGKILL inside every stage of a tiny real pipeline, then resume: completed stages are reused,
the killed stage leaves no sealed artifact and reruns, and the final run completes. Also: a
corrupt run-state file (status.json) is reset with a warning instead of crashing the run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

STAGES = ["rollout", "hessian", "prune", "quantize", "evaluate", "export"]


@pytest.fixture()
def every_stage_recipe(rac_recipe_file, tiny_model_dir, tmp_path) -> Path:
    """A recipe that runs all six stages on the tiny model (a 2-problem probe, FP8 compressed-tensors export)."""
    return rac_recipe_file(tiny_model_dir, 160, 6, prune={"method": "sparsegpt", "sparsity": 0.5},
                           quantize={"scheme": "fp8_w8a8"},
                           evaluate={"max_new_tokens": 4, "tasks": [
                               {"name": "probe", "type": "probe", "dataset": "gsm8k_test", "limit": 2, "t_max": 4}]},
                           export={"format": "compressed-tensors", "path": tmp_path / "exported"})


@pytest.mark.slow
def test_sigkill_in_each_stage_then_resume(tmp_path, every_stage_recipe):
    recipe, run_dir, cache, report = every_stage_recipe, tmp_path / "run", tmp_path / "c", tmp_path / "r"
    driver = Path(__file__).with_name("kill_driver.py")
    done = subprocess.run([sys.executable, str(driver), str(recipe), str(run_dir), str(cache), str(report), *STAGES],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(report.read_text())
    for index, killed in enumerate(result["killed"]):
        name, status = killed["stage"], killed["status"]
        assert killed["exitcode"] == -9, killed
        assert status[name]["status"] == "running" and not killed["sealed"], killed
        if index:  # the stage killed last time was recomputed, everything before it reused
            assert status[STAGES[index - 1]]["status"] == "done", status
            assert all(status[s]["status"] == "cached" for s in STAGES[: index - 1]), status
    assert result["final"]["export"]["status"] == "done"
    assert all(result["final"][s]["status"] == "cached" for s in STAGES[:-1]), result["final"]
    leftovers = sorted(str(p.relative_to(cache)) for p in cache.rglob(".*.tmp"))
    assert leftovers == [], leftovers  # every killed writer's temp entry was cleaned on resume
    assert (tmp_path / "exported" / ".rac-export").is_file()
    assert (tmp_path / "exported" / "model.safetensors").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".exported")] == []


def test_corrupt_status_file_is_reset_with_a_warning(tmp_path, caplog):
    sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))
    from standin import STAGES as STANDIN
    from standin import counts, loaded

    from rac.pipeline.cache import Cache
    from rac.pipeline.run import run_recipe

    recipe = {"gen": {"n": 3}, "scale": {"factor": 2}, "counts": str(tmp_path / "counts"), "run": {"device": "cpu"}}
    cache, run_dir = Cache(tmp_path / "c"), tmp_path / "run"
    run_recipe(loaded(recipe), STANDIN, "m", cache, run_dir)
    for broken in ('{"gen": {"status": "do', "[1, 2]", ""):
        (run_dir / "status.json").write_text(broken)
        with caplog.at_level("WARNING", logger="rac.run"):
            result = run_recipe(loaded(recipe), STANDIN, "m", cache, run_dir)
        assert "starting a fresh status" in caplog.text
        assert result.metrics["stages"]["scale"]["cache_hit"] is True
        assert json.loads((run_dir / "status.json").read_text())["scale"]["status"] == "cached"
    assert counts(recipe, "scale") == 1


@pytest.mark.parametrize("name", ["../../x", "a/b", ".hidden/../../x"])
def test_run_name_cannot_leave_output_dir(tmp_path, name):
    from rac.pipeline.run import default_run_dir

    with pytest.raises(ValueError, match="run.name"):
        default_run_dir({"run": {"name": name, "output_dir": str(tmp_path / "runs")}}, "r")
