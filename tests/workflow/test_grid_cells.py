"""`rac grid --cell`: run some cells of a grid; the others' finished runs stay in the grid summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rac.cli import main


@pytest.fixture()
def grid_recipe(rac_recipe_file, tiny_model_dir) -> Path:
    """Magnitude pruning of the tiny model's MLPs, no calibration work worth timing (the grid sweeps sparsity)."""
    return rac_recipe_file(tiny_model_dir, 200, 4, name="tiny", prune={
        "method": "magnitude", "sparsity": 0.5, "scopes": [{"name": "all", "modules": ["mlp"], "blocks": "all"}]})


def _grid(recipe: Path, out: Path, *extra: str) -> int:
    return main(["grid", str(recipe), "--axis", "prune.sparsity=0.3,0.5", "--output-dir", str(out), *extra])


def _summary(grid_dir: Path) -> list[str]:
    return [cell["cell"] for cell in json.loads((grid_dir / "grid.json").read_text())["cells"]]


def test_cell_runs_only_that_cell_and_keeps_the_others_finished_runs(tmp_path, grid_recipe, capsys, monkeypatch,
                                                                      caplog):
    out = tmp_path / "g"
    assert _grid(grid_recipe, out, "--cell", "sparsity-0.5") == 0
    grid_dir = out / "tiny"
    (only,) = _summary(grid_dir)
    assert only.startswith("sparsity-0.5_")
    assert [p.name for p in grid_dir.iterdir() if p.name.startswith("sparsity-")] == [only]  # 0.3 never ran
    text = capsys.readouterr().out
    assert "--cell: 1 of the grid's 2 cells" in text and "2 cells, all valid; running 1" in text

    assert _grid(grid_recipe, out, "--cell", "sparsity-0.3") == 0
    cells = _summary(grid_dir)
    assert [c.split("_")[0] for c in cells] == ["sparsity-0.3", "sparsity-0.5"]  # grid order, 0.5 kept
    assert "1 other(s) finished earlier" in capsys.readouterr().out
    rows = json.loads((grid_dir / "grid.json").read_text())["cells"]
    assert all(row["status"] == "done" and Path(row["run_dir"]).is_dir() for row in rows)

    # a cell that cannot be planned here (say its model is not resolvable) is left out of the summary, said
    from rac import app
    from rac.errors import RacError
    from rac.pipeline.cache import Cache
    from rac.recipe.grid import expand_grid
    from rac.workflow.executors import finished_results

    cells = expand_grid(recipe_path=grid_recipe, axes=["prune.sparsity=0.3,0.5"], overrides=[], environment=False)
    cache = Cache(tmp_path / "rac-cache")
    assert sorted(finished_results(cells, grid_dir, cache)) == sorted(c.name for c in cells)

    def unplannable(*args, **kwargs):
        raise RacError("model not resolvable here")

    with monkeypatch.context() as patch, caplog.at_level("WARNING"):
        patch.setattr(app, "plan_recipe", unplannable)
        assert finished_results(cells, grid_dir, cache) == {}
    assert "left out (cannot plan it here: model not resolvable here)" in caplog.text

    # a finished run of a recipe that has changed since is not kept: it is not this grid's cell any more
    assert main(["grid", str(grid_recipe), "--axis", "prune.sparsity=0.3,0.5", "--output-dir", str(out),
                 "--cell", "sparsity-0.3", "prune.scopes.0.modules=[attn]"]) == 0
    assert [c.split("_")[0] for c in _summary(grid_dir)] == ["sparsity-0.3"]


def test_cell_selects_in_dry_run_and_status(tmp_path, grid_recipe, capsys):
    out = tmp_path / "g"
    assert _grid(grid_recipe, out, "--dry-run", "--cell", "0.3") == 0
    text = capsys.readouterr().out
    assert "sparsity-0.3" in text and "sparsity-0.5" not in text
    assert _grid(grid_recipe, out, "--status", "--cell", "0.5") == 0
    text = capsys.readouterr().out
    assert "sparsity-0.5" in text and "sparsity-0.3" not in text
    assert not (out / "tiny").exists()


def test_unknown_or_ambiguous_cell_is_a_usage_error_before_any_work(tmp_path, grid_recipe, capsys):
    out = tmp_path / "g"
    assert _grid(grid_recipe, out, "--cell", "sparsity-0.55") == 2
    err = capsys.readouterr().err
    assert "--cell 'sparsity-0.55'" in err and "did you mean" in err
    assert _grid(grid_recipe, out, "--cell", "sparsity") == 2
    assert "matches 2 cells" in capsys.readouterr().err
    assert not out.exists()
