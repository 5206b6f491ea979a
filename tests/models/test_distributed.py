"""Distributed Hessians: a 2-process gloo prune (torchrun) equals one process; single-process no-ops."""

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

from rac.models import distributed
from rac.pipeline.cache import Cache
from rac.stages import hessian, prune

PRUNE = {"method": "sparsegpt", "sparsity": 0.5, "batch_size": 2,
         "scopes": [{"name": "mlp24", "modules": ["mlp"], "blocks": "all", "pattern": "2:4"},
                    {"name": "attn", "modules": ["attn"], "blocks": "all"}]}


def test_single_process_is_a_no_op():
    assert not distributed.active() and distributed.rank() == 0 and distributed.world_size() == 1
    assert list(distributed.shard(range(5))) == [0, 1, 2, 3, 4]
    assert distributed.agree(True) and not distributed.agree(False)
    t = torch.arange(3.0)
    assert distributed.broadcast_(t) is t
    assert distributed.init_from_env("cpu") == "cpu"


def _single(recipe: dict, tmp: Path, stage_ctx) -> dict[str, torch.Tensor]:
    cache, outs = Cache(tmp / "single-cache"), {}
    for name in ("hessian", "prune"):
        ctx = stage_ctx(recipe, f"single/{name}", inputs=outs, cache=cache, model_identity="tiny")
        (hessian if name == "hessian" else prune).run(ctx)
        outs[name] = ctx.out_dir
    return load_file(str(outs["prune"] / "weights.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("true_sequential", [True, False])
def test_two_gloo_ranks_prune_like_one_process(tiny_model_dir, tmp_path, recipe, stage_ctx, true_sequential):
    data = recipe(**{"model.id": tiny_model_dir, "calibration.budget.prompts": 8, "prune": PRUNE,
                     "prune.true_sequential": true_sequential})
    (tmp_path / "recipe.json").write_text(json.dumps(data))  # the schema-filled recipe each rank reads
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    out = tmp_path / "dist"
    out.mkdir()
    proc = subprocess.run([torchrun, "--standalone", "--nproc_per_node", "2", str(Path(__file__).parent / "dist_prune_worker.py"),
                           str(tmp_path / "recipe.json"), str(tmp_path / "dist-cache"), str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = load_file(str(out / "weights.safetensors"))
    assert all(torch.equal(two[k], v) for k, v in load_file(str(out / "weights_rank1.safetensors")).items())
    one = _single(data, tmp_path, stage_ctx)
    assert set(one) == set(two) and len(one) == 14
    for name in one:
        assert torch.equal(one[name] == 0, two[name] == 0), name  # the same masks
        assert torch.allclose(one[name], two[name], atol=1e-4), name
    blobs = list((tmp_path / "dist-cache" / "blobs" / "hessian").glob("*.safetensors"))
    assert blobs  # rank 0 stored the block-0 Hessians
