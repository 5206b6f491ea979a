"""`torchrun --nproc_per_node 2 -m rac.cli run`: the data-parallel pipeline (gloo) equals one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def _recipe(tmp_path: Path, model: Path, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"""
version: 1
name: {name}
model: {{id: {model}}}
calibration:
  kind: prompt
  sources: [{{dataset: gsm8k_train}}]
  budget: {{prompts: 8}}
prune:
  method: sparsegpt
  sparsity: 0.5
  batch_size: 2
  scopes:
    - {{name: mlp-24, modules: [mlp], blocks: all, pattern: "2:4"}}
    - {{name: rest, modules: [attn], blocks: all}}
export: {{path: {tmp_path / (name + "-model")}}}
run: {{output_dir: {tmp_path / "runs"}, device: cpu}}
""")
    return path


def _pruned(run_dir: Path) -> dict[str, torch.Tensor]:
    status = json.loads((run_dir / "status.json").read_text())
    return load_file(str(Path(status["prune"]["artifact"]) / "weights.safetensors"))


def test_two_ranks_run_the_pipeline_like_one_process(tmp_path, tiny_model_dir):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    two = tmp_path / "two"
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", "-m", "rac.cli", "run",
                           str(_recipe(tmp_path, tiny_model_dir, "two")), "--run-dir", str(two),
                           "--cache", str(tmp_path / "cache-two")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    one = tmp_path / "one"
    proc = subprocess.run([sys.executable, "-m", "rac.cli", "run", str(_recipe(tmp_path, tiny_model_dir, "one")),
                           "--run-dir", str(one), "--cache", str(tmp_path / "cache-one")],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    a, b = _pruned(one), _pruned(two)
    assert set(a) == set(b) and a
    for name in a:
        assert torch.equal(a[name] == 0, b[name] == 0), name  # the same masks
        assert torch.allclose(a[name], b[name], atol=1e-4), name
    metrics = json.loads((two / "metrics.json").read_text())  # rank 0 wrote the run dir
    assert [metrics["stages"][s]["status"] for s in ("hessian", "prune", "export")] == ["done"] * 3
    assert (two / "ranks" / "rank1.log").is_file() and (tmp_path / "two-model" / "config.json").is_file()
    hessian = json.loads((two / "status.json").read_text())["hessian"]["artifact"]
    assert json.loads((Path(hessian) / "_summary.json").read_text())["summary"]["sequences"] == 8
