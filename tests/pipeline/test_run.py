import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from standin import STAGES, counts, loaded

from rac.pipeline.cache import Cache
from rac.pipeline.run import StageFailed, run_recipe


def make_recipe(tmp_path, factor=2):
    return {"gen": {"n": 4}, "scale": {"factor": factor}, "report": {"on": True},
            "counts": str(tmp_path / "counts"), "run": {"device": "cpu"}}


def test_run_writes_run_dir_and_second_run_hits_cache(tmp_path):
    cache = Cache(tmp_path / "cache")
    r = make_recipe(tmp_path)
    result = run_recipe(loaded(r), STAGES, "m", cache, tmp_path / "run")
    run_dir = result.run_dir
    for name in ("recipe.resolved.yaml", "overrides.json", "env.json", "run.log", "status.json", "metrics.json"):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["stages"]["scale"]["summary"] == {"total": 12}
    assert metrics["stages"]["report"]["summary"] == {"max": 6}
    assert (run_dir / "artifacts" / "report" / "report.txt").read_text() == "6"
    status = json.loads((run_dir / "status.json").read_text())
    assert {s["status"] for s in status.values()} == {"done"}

    again = run_recipe(loaded(r), STAGES, "m", cache, tmp_path / "run")
    assert counts(r, "gen") == 1 and counts(r, "scale") == 1
    assert again.metrics["stages"]["gen"]["cache_hit"] is True
    assert again.metrics["stages"]["scale"]["summary"] == {"total": 12}
    # an uncached stage (run-dir artifact) always reruns
    assert counts(r, "report") == 2


def test_grid_like_change_reuses_upstream(tmp_path):
    cache = Cache(tmp_path / "cache")
    run_recipe(loaded(make_recipe(tmp_path, 2)), STAGES, "m", cache, tmp_path / "a")
    r3 = make_recipe(tmp_path, 3)
    result = run_recipe(loaded(r3), STAGES, "m", cache, tmp_path / "b")
    assert counts(r3, "gen") == 1 and counts(r3, "scale") == 2
    assert result.metrics["stages"]["scale"]["summary"] == {"total": 18}


def test_corrupted_and_partial_cache_entries_are_recomputed(tmp_path):
    cache = Cache(tmp_path / "cache")
    r = make_recipe(tmp_path)
    result = run_recipe(loaded(r), STAGES, "m", cache, tmp_path / "run")
    gen_fp = result.plan.get("gen").fingerprint
    artifact = cache.artifact_path("gen", gen_fp)
    (artifact / "numbers.json").write_text("[9, 9]")  # corrupt content: checksum mismatch
    run_recipe(loaded(r), STAGES, "m", cache, tmp_path / "run")
    assert counts(r, "gen") == 2
    assert json.loads((artifact / "numbers.json").read_text()) == [0, 1, 2, 3]
    (artifact / "_manifest.json").unlink()  # partial entry: no manifest
    run_recipe(loaded(r), STAGES, "m", cache, tmp_path / "run")
    assert counts(r, "gen") == 3


def test_failing_stage_reports_and_leaves_no_partial_artifact(tmp_path):
    def boom(ctx):
        (ctx.out_dir / "half.bin").write_text("x")
        raise RuntimeError("kaput")

    from rac.pipeline.stage import Stage

    stages = (STAGES[0], Stage("scale", needs=("gen",), reads=("scale.factor",), version="1", run=boom))
    cache = Cache(tmp_path / "cache")
    with pytest.raises(StageFailed, match="kaput"):
        run_recipe(loaded(make_recipe(tmp_path)), stages, "m", cache, tmp_path / "run")
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["gen"]["status"] == "done" and status["scale"]["status"] == "failed"
    assert "kaput" in status["scale"]["error"]
    assert not any(p.name.endswith(".tmp") or (p / "half.bin").exists()
                   for p in (tmp_path / "cache" / "artifacts" / "scale").glob("*") if p.is_dir()) \
        if (tmp_path / "cache" / "artifacts" / "scale").exists() else True
    assert "kaput" in (tmp_path / "run" / "run.log").read_text()


def test_killed_run_resumes_from_completed_stages(tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from rac.pipeline.cache import Cache
        from rac.pipeline.run import run_recipe
        from standin import STAGES, loaded
        r = {{"gen": {{"n": 4}}, "scale": {{"factor": 2}}, "report": {{"on": True}},
              "counts": {str(tmp_path / "counts")!r}, "run": {{"device": "cpu"}}}}
        run_recipe(loaded(r), STAGES, "m", Cache({str(tmp_path / "cache")!r}), {str(tmp_path / "run")!r})
    """))
    env = dict(os.environ, RAC_TEST_KILL="scale")
    killed = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert killed.returncode == -9
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["gen"]["status"] == "done" and status["scale"]["status"] == "running"
    env.pop("RAC_TEST_KILL")
    resumed = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    names = sorted(p.name.rsplit("-", 1)[0] for p in (tmp_path / "counts").iterdir())
    assert names.count("gen") == 1  # not recomputed after the kill
    assert names.count("scale") == 2
    status = json.loads((tmp_path / "run" / "status.json").read_text())
    assert status["gen"]["status"] == "cached" and status["scale"]["status"] == "done"
    assert status["scale"]["attempts"] == 2


def test_failed_later_stage_keeps_metrics_of_completed_stages(tmp_path):
    """A failing last stage (e.g. export) still writes metrics.json with what the earlier stages measured."""
    from rac.pipeline.run import metrics_schema_errors
    from rac.pipeline.stage import Stage

    def boom(ctx):
        raise OSError("disk full")

    stages = (*STAGES[:2], Stage("report", needs=("scale",), reads=("report",), version="1", run=boom,
                                 cached=False))
    with pytest.raises(StageFailed, match="disk full") as caught:
        run_recipe(loaded(make_recipe(tmp_path)), stages, "m", Cache(tmp_path / "cache"), tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert metrics["failure"] == {"stage": "report", "error": "OSError: disk full"}
    assert metrics["stages"]["scale"]["status"] == "done" and metrics["stages"]["scale"]["summary"] == {"total": 12}
    assert metrics["stages"]["report"]["status"] == "failed" and "disk full" in metrics["stages"]["report"]["error"]
    assert metrics_schema_errors(metrics) == []
    assert caught.value.result is not None and caught.value.result.metrics == metrics


def test_stages_after_a_failure_are_recorded_as_skipped(tmp_path):
    from rac.pipeline.stage import Stage

    def boom(ctx):
        raise RuntimeError("kaput")

    stages = (STAGES[0], Stage("scale", needs=("gen",), reads=("scale.factor",), version="1", run=boom), STAGES[2])
    with pytest.raises(StageFailed):
        run_recipe(loaded(make_recipe(tmp_path)), stages, "m", Cache(tmp_path / "cache"), tmp_path / "run")
    records = json.loads((tmp_path / "run" / "metrics.json").read_text())["stages"]
    assert [records[s]["status"] for s in ("gen", "scale", "report")] == ["done", "failed", "skipped"]
