"""Grid summary rows: evaluate's metric keys (SE, throughput), and failed cells keep their measurements."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from standin import STAGES, loaded

from rac.pipeline.cache import Cache
from rac.pipeline.run import RunResult, StageFailed, run_recipe
from rac.pipeline.stage import Stage
from rac.recipe.grid import GridCell
from rac.report.grid import grid_summary_rows, write_grid_summary

EVALUATE = {"gsm8k": {"type": "math", "status": "ok", "accuracy": 0.25, "accuracy_se": 0.0625,
                      "tokens_per_second": 41.5, "mean_length": 12.0, "truncated_fraction": 0.5, "seconds": 3.0},
            "probe": {"type": "probe", "status": "ok", "decode_nll": 0.8, "dense_decode_nll": 0.4}}


def _cell(name: str, recipe: dict | None = None) -> GridCell:
    return GridCell(name, ("prune.sparsity=0.5", "@overlays/rac.yaml"), SimpleNamespace(data=recipe))  # type: ignore[arg-type]


def test_summary_shows_standard_error_and_throughput(tmp_path):
    metrics = {"stages": {"evaluate": {"status": "done", "cache_hit": False, "seconds": 3.04}}, "evaluate": EVALUATE}
    recipe = {"calibration": {"kind": "text", "sources": [{"path": "hf:allenai/c4:en"}]},
              "prune": {"scopes": [{"modules": ["mlp"], "blocks": "first_third", "pattern": "2:4"}]},
              "quantize": {"scheme": "fp8_w8a8"}}
    rows = grid_summary_rows([(_cell("c1", recipe), RunResult(tmp_path, None, metrics), None)])  # type: ignore[arg-type]
    row = rows[0]
    assert row["compression"] == "2:4 MLP first third + FP8" and row["calibration"] == "C4"
    assert row["gsm8k.accuracy_se"] == 0.0625 and row["gsm8k.tokens_per_second"] == 41.5
    assert row["gsm8k.accuracy"] == 0.25 and row["probe.decode_nll"] == 0.8 and row["probe.dense_decode_nll"] == 0.4
    assert row["overlays"] == "rac" and row["prune.sparsity"] == "0.5" and row["evaluate_s"] == 3.0
    csv_path, md_path = write_grid_summary(tmp_path, rows)
    assert "gsm8k.accuracy_se" in csv_path.read_text() and "41.5" in md_path.read_text()


def test_failed_cell_shows_completed_stages_next_to_the_failure(tmp_path):
    """The last stage (like export) fails: the summary still has what the earlier stages measured."""
    def boom(ctx):
        raise OSError("disk full")

    stages = (*STAGES[:2], Stage("report", needs=("scale",), reads=("report",), version="1", run=boom, cached=False))
    recipe = {"gen": {"n": 4}, "scale": {"factor": 2}, "report": {"on": True}, "counts": str(tmp_path / "counts"),
              "run": {"device": "cpu"}}
    with pytest.raises(StageFailed) as caught:
        run_recipe(loaded(recipe), stages, "m", Cache(tmp_path / "cache"), tmp_path / "run")
    rows = grid_summary_rows([(_cell("c1"), caught.value.result, str(caught.value))])
    row = rows[0]
    assert row["status"] == "failed" and row["failed_stage"] == "report" and "disk full" in row["error"]
    assert isinstance(row["gen_s"], float) and isinstance(row["scale_s"], float)
    assert row["report_s"] == "failed"
    assert row["run_dir"] == str(Path(tmp_path / "run"))
