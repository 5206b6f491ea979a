"""Grid cells on a cluster: a local Ray cluster and submitit's local executor run a two-cell grid of a
tiny model; the shared rollout and Hessians run once, before the fan-out; --status and resubmission."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rac.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture()
def grid_recipe(rac_recipe_file, tiny_model_dir) -> Path:
    """SparseGPT on every MLP of the tiny model (the grid sweeps its sparsity)."""
    return rac_recipe_file(tiny_model_dir, 200, 8, name="tiny", prune={
        "method": "sparsegpt", "sparsity": 0.5, "scopes": [{"name": "all", "modules": ["mlp"], "blocks": "all"}]})


def _grid(recipe: Path, out: Path, *extra: str) -> int:
    return main(["grid", str(recipe), "--axis", "prune.sparsity=0.3,0.5", "--output-dir", str(out), *extra])


def _check_shared_once(grid_dir: Path) -> None:
    grid = json.loads((grid_dir / "grid.json").read_text())
    assert [c["status"] for c in grid["cells"]] == ["done", "done"]
    shared = sorted((grid_dir / "_shared").iterdir())
    assert len(shared) == 1  # one prefix job: rollout and the first Hessians, for both cells
    prefix = json.loads((shared[0] / "status.json").read_text())
    assert prefix["rollout"]["status"] == prefix["hessian"]["status"] == "done" and "prune" not in prefix
    for cell in grid["cells"]:
        metrics = json.loads((Path(cell["run_dir"]) / "metrics.json").read_text())
        assert metrics["stages"]["rollout"]["cache_hit"] is True  # computed once, before the fan-out
        assert metrics["stages"]["hessian"]["cache_hit"] is True  # the first Hessians too
        assert metrics["stages"]["prune"]["cache_hit"] is False
        assert json.loads((Path(cell["run_dir"]) / "status.json").read_text())["rollout"]["status"] == "cached"


def test_ray_grid_status_and_resubmit(ray_cluster, tmp_path, grid_recipe, capsys):
    recipe, out = grid_recipe, tmp_path / "g"
    assert _grid(recipe, out, "--status") == 0
    assert capsys.readouterr().out.count("pending") >= 2
    assert _grid(recipe, out, "--executor", "ray") == 0
    _check_shared_once(out / "tiny")
    assert len(list((tmp_path / "rac-cache" / "artifacts" / "rollout").iterdir())) == 1
    capsys.readouterr()

    assert _grid(recipe, out, "--status") == 0
    status = capsys.readouterr().out
    assert "2 done" in status and "rollout:cached" in status and "prune:done" in status

    # resubmitted: both cells are done, nothing runs (their status files stay as they were)
    stamps = [p.stat().st_mtime_ns for p in sorted((out / "tiny").glob("*/status.json"))]
    assert _grid(recipe, out, "--executor", "ray") == 0
    assert capsys.readouterr().out.count("done already, skipped") == 2
    assert [p.stat().st_mtime_ns for p in sorted((out / "tiny").glob("*/status.json"))] == stamps


def test_submitit_local_grid(tmp_path, grid_recipe):
    pytest.importorskip("submitit")
    recipe, out = grid_recipe, tmp_path / "g"
    assert _grid(recipe, out, "--executor", "submitit-local") == 0
    _check_shared_once(out / "tiny")
    assert list((out / "tiny" / "submitit").glob("*_log.out"))  # the jobs went through submitit


def test_bad_slurm_option(tmp_path, grid_recipe, capsys):
    recipe = grid_recipe
    assert _grid(recipe, tmp_path / "g", "--executor", "slurm", "--slurm", "account") == 2
    assert "--slurm 'account': expected KEY=VALUE" in capsys.readouterr().err
