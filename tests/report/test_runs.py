"""Run records find their artifacts in the cache the report was given (``rac report --cache``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rac.cli import main
from rac.pipeline.cache import Cache
from rac.report.runs import collect_runs


def _artifacts_into_cache(grid: Path, root: Path) -> None:
    """Move every run's evaluate artifact into a cache at ``root``, as a run with ``--cache root`` leaves
    it; status.json then records a path that no longer exists (the cache moved, the runs were copied)."""
    cache = Cache(root)
    for run in sorted(p.parent for p in grid.rglob("status.json")):
        status = json.loads((run / "status.json").read_text())
        fingerprint = status["evaluate"]["fingerprint"]
        with cache.writing("evaluate", fingerprint) as tmp:
            shutil.copytree(run / "artifacts" / "evaluate", tmp, dirs_exist_ok=True)
        shutil.rmtree(run / "artifacts")
        assert cache.lookup("evaluate", fingerprint) is not None


def _heatmaps(out: Path) -> set[str]:
    return {p.name for p in out.glob("fidelity_*.png")} if out.is_dir() else set()


def test_report_reads_artifacts_from_the_cache_given_with_dash_dash_cache(table1_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "default-cache"))  # not where the artifacts are
    _artifacts_into_cache(table1_dir, tmp_path / "elsewhere")
    assert main(["report", str(table1_dir), "--out", str(tmp_path / "plain")]) == 0
    assert _heatmaps(tmp_path / "plain") == set()  # the default cache has no probe arrays
    assert main(["report", str(table1_dir), "--cache", str(tmp_path / "elsewhere"),
                 "--out", str(tmp_path / "given")]) == 0
    assert len(_heatmaps(tmp_path / "given")) == 4  # 30% and 50%: C4 vs RAC, prompt vs RAC


def test_report_reads_artifacts_from_rac_cache(table1_dir, tmp_path, monkeypatch):
    _artifacts_into_cache(table1_dir, tmp_path / "env-cache")
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "env-cache"))
    assert main(["report", str(table1_dir), "--out", str(tmp_path / "r")]) == 0
    assert len(_heatmaps(tmp_path / "r")) == 4


def test_artifact_dir_prefers_the_recorded_path_then_the_given_cache(table1_dir, tmp_path):
    record = next(r for r in collect_runs(table1_dir) if r.path.name == "rac_30")
    assert record.artifact_dir("evaluate") == record.path / "artifacts" / "evaluate"
    _artifacts_into_cache(table1_dir, tmp_path / "c")
    moved = next(r for r in collect_runs(table1_dir, Cache(tmp_path / "c")) if r.path.name == "rac_30")
    assert moved.artifact_dir("evaluate") == Cache(tmp_path / "c").artifact_path("evaluate", "evaluate-rac_30")
    assert moved.probe_arrays("probe") is not None
    assert next(r for r in collect_runs(table1_dir, Cache(tmp_path / "empty"))
                if r.path.name == "rac_30").artifact_dir("evaluate") is None
