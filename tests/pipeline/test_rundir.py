"""RunDir: the run directory's files are read and written in one place."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from rac.pipeline.cache import Cache
from rac.pipeline.rundir import RunDir


def test_inputs_status_metrics_round_trip(tmp_path):
    given = tmp_path / "r.yaml"
    given.write_text("version: 1\n")
    run = RunDir(tmp_path / "run")
    loaded = SimpleNamespace(files=[given], overrides=["a=1"])
    run.write_inputs(loaded, {"version": 1, "name": "x"})
    assert not run.is_run()  # a recipe alone is not a run yet
    run.write_status({"gen": {"status": "done", "fingerprint": "f1", "artifact": str(tmp_path)}})
    run.write_metrics({"stages": {"gen": {"fingerprint": "f1"}}, "evaluate": {}})
    assert run.is_run()
    assert run.read_recipe() == {"version": 1, "name": "x"}
    assert (run.path / "recipe" / "00-r.yaml").read_text() == "version: 1\n"
    assert json.loads((run.path / "overrides.json").read_text()) == ["a=1"]
    assert run.read_metrics() == {"stages": {"gen": {"fingerprint": "f1"}}, "evaluate": {}}
    assert run.artifacts() == {"gen": tmp_path}
    assert run.rank_log_file(3) == run.path / "ranks" / "rank3.log"


def test_corrupt_status_is_reset_for_a_run_but_an_error_for_a_report(tmp_path, caplog):
    run = RunDir(tmp_path)
    run.status_file.write_text("{not json")
    assert run.read_status() == {}
    assert "unreadable" in caplog.text
    with pytest.raises(ValueError, match="status.json"):
        run.read_status(strict=True)


def test_artifact_falls_back_to_the_given_cache_by_fingerprint(tmp_path):
    cache = Cache(tmp_path / "cache")
    with cache.writing("gen", "abc123") as out:
        (out / "numbers.json").write_text("[1]")
    run = RunDir(tmp_path / "run", cache)
    run.path.mkdir()
    run.write_status({"gen": {"status": "done", "fingerprint": "abc123", "artifact": str(tmp_path / "gone")}})
    assert run.artifact("gen") == cache.artifact_path("gen", "abc123")
    assert RunDir(run.path, Cache(tmp_path / "other")).artifact("gen") is None
    assert run.artifact("scale") is None
