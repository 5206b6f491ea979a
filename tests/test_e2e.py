"""End to end through the CLI on a tiny 3-block Llama: run, resume, grid reuse, rollouts, report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rac.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, save_tiny) -> Path:
    return save_tiny(tmp_path_factory.mktemp("models") / "tiny3", layers=3)


@pytest.fixture()
def recipe(rac_recipe_file, tiny_dir) -> Path:
    """SparseGPT 50% with a 2:4 MLP scope on the first third, a probe and GSM8K (2 problems each)."""
    return rac_recipe_file(tiny_dir, 400, 12, name="tiny", prune={
        "method": "sparsegpt", "sparsity": 0.5,
        "scopes": [{"name": "mlp-24", "modules": ["mlp"], "blocks": "first_third", "pattern": "2:4"},
                   {"name": "rest", "modules": ["attn"], "blocks": "all"}]},
        evaluate={"max_new_tokens": 8, "tasks": [
            {"name": "probe", "type": "probe", "dataset": "gsm8k_test", "limit": 2, "t_max": 8},
            {"name": "gsm8k", "type": "math", "dataset": "gsm8k_test", "limit": 2}]})


def test_run_resume_grid_report(tmp_path, recipe, capsys):
    from jsonschema import Draft202012Validator

    r = recipe
    assert main(["plan", str(r)]) == 0
    out = capsys.readouterr().out
    assert "miss" in out and "mlp-24" in out and "gate_proj" in out

    run_dir = tmp_path / "run"
    assert main(["run", str(r), "--run-dir", str(run_dir)]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "metrics.schema.json").read_text())
    Draft202012Validator(schema).validate(metrics)
    from rac.pipeline.run import metrics_schema_errors

    assert metrics_schema_errors(metrics) == []
    assert metrics_schema_errors({"stages": 3}) != []
    assert [s for s in metrics["stages"]] == ["rollout", "hessian", "prune", "evaluate"]
    assert metrics["evaluate"]["probe"]["decode_nll"] > 0
    report = json.loads(next((tmp_path / "rac-cache").rglob("artifacts/prune/*/report.json")).read_text())
    by_name = {m["name"]: m for m in report["modules"]}
    assert by_name["model.layers.0.mlp.gate_proj.weight"]["pattern"] == "2:4"
    assert "model.layers.1.mlp.gate_proj.weight" not in by_name  # outside every scope: dense
    assert abs(by_name["model.layers.2.self_attn.q_proj.weight"]["achieved"] - 0.5) < 1e-6

    # rerun: everything cached
    capsys.readouterr()
    assert main(["run", str(r), "--run-dir", str(run_dir)]) == 0
    again = json.loads((run_dir / "metrics.json").read_text())
    assert all(s["cache_hit"] for s in again["stages"].values())

    # a grid differing only in sparsity reuses the rollouts (and block 0's first Hessian)
    assert main(["grid", str(r), "--axis", "prune.sparsity=0.3,0.5", "--output-dir", str(tmp_path / "g")]) == 0
    grid = json.loads((tmp_path / "g" / "tiny" / "grid.json").read_text())
    assert len(grid["cells"]) == 2 and {c["status"] for c in grid["cells"]} == {"done"}
    cell_metrics = [json.loads((Path(c["run_dir"]) / "metrics.json").read_text()) for c in grid["cells"]]
    assert all(m["stages"]["rollout"]["cache_hit"] for m in cell_metrics)
    assert (tmp_path / "g" / "tiny" / "summary.csv").is_file()
    assert (tmp_path / "g" / "tiny" / "summary.md").is_file()

    assert main(["rollouts", "show", str(run_dir), "-n", "1"]) == 0
    assert "completion_len" in capsys.readouterr().out

    assert main(["report", str(tmp_path / "g" / "tiny")]) == 0
    written = list((tmp_path / "g" / "tiny" / "report").iterdir())
    assert any(p.suffix == ".png" for p in written) and any(p.name == "table.md" for p in written)
