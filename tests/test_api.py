"""The Python API: rac.run on a path and on a dict, resume, and typed errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

import rac
from rac.recipe.errors import RecipeError

pytestmark = pytest.mark.slow


def _recipe(model_dir, tmp_path) -> dict:
    return {
        "version": 1,
        "name": "api",
        "model": {"id": str(model_dir)},
        "calibration": {"kind": "prompt", "sources": [{"dataset": "gsm8k_train"}], "budget": {"prompts": 4}},
        "prune": {"method": "magnitude", "sparsity": 0.5},
        "export": {"path": str(tmp_path / "exported")},
        "run": {"output_dir": str(tmp_path / "runs"), "device": "cpu"},
    }


def test_run_from_a_dict_then_resume_from_the_run(tmp_path, tiny_model_dir):
    out = rac.run(_recipe(tiny_model_dir, tmp_path), overrides=["prune.sparsity=0.25"], cache=tmp_path / "c")
    assert out.run_dir.is_dir() and (out.run_dir / "metrics.json").is_file()
    assert out.metrics["stages"]["prune"]["status"] == "done"
    assert out.artifacts["prune"].is_dir() and str(out.artifacts["prune"]).startswith(str(tmp_path / "c"))
    assert out.export_dir == tmp_path / "exported" and (out.export_dir / "config.json").is_file()
    again = rac.run(_recipe(tiny_model_dir, tmp_path), overrides=["prune.sparsity=0.25"], cache=tmp_path / "c")
    assert again.run_dir == out.run_dir
    assert again.metrics["stages"]["prune"]["cache_hit"] is True


def test_bad_recipe_is_a_located_recipe_error(tmp_path, tiny_model_dir):
    recipe = _recipe(tiny_model_dir, tmp_path)
    recipe["prune"]["sparsity"] = 1.5
    with pytest.raises(RecipeError, match="sparsity"):
        rac.run(recipe, cache=tmp_path / "c")


def test_import_rac_stays_light():
    code = "import sys, rac; assert 'torch' not in sys.modules; assert callable(rac.run); print('ok')"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "ok"
