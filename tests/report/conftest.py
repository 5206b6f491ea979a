"""Synthetic grid directories (no model runs) for the report tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file

ACC = {("dense", "c4"): 0.40, ("50%", "c4"): 0.10, ("50%", "prompt"): 0.20, ("50%", "rac"): 0.30,
       ("30%", "c4"): 0.30, ("30%", "prompt"): 0.32, ("30%", "rac"): 0.35}


def _probe_arrays(scale: float, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    prompt_len = torch.tensor([5, 7, 4])
    lengths = prompt_len + torch.tensor([10, 6, 12])
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    total = int(offsets[-1])
    err = (torch.rand(total, generator=gen) + 0.5) * scale
    return {"abs_error": err, "rel_error": err / 10, "nll": err.clone(), "dense_nll": err / 2,
            "offsets": offsets, "prompt_len": prompt_len}


def make_run(root: Path, sparsity: str, kind: str) -> Path:
    run = root / f"{kind}-{sparsity.strip('%')}"
    artifact = run / "artifacts" / "evaluate"
    (artifact / "probe").mkdir(parents=True)
    recipe: dict = {"model": {"id": "tiny"}, "calibration": {
        "kind": "text" if kind == "c4" else kind, "sources": [{"dataset": "c4" if kind == "c4" else "gsm8k_train"}]}}
    if sparsity != "dense":
        recipe["prune"] = {"sparsity": int(sparsity.strip("%")) / 100, "pattern": None}
    acc = ACC[(sparsity, kind)]
    scale = {"c4": 1.5, "prompt": 1.2, "rac": 1.0}[kind] * (0 if sparsity == "dense" else 1)
    save_file(_probe_arrays(max(scale, 1e-6), 0 if kind == "rac" else 1), str(artifact / "probe" / "probe.safetensors"))
    evaluate = {
        "gsm8k": {"type": "math", "status": "ok", "accuracy": acc, "accuracy_se": (acc * (1 - acc) / 50) ** 0.5,
                  "mean_length": 100 + 200 * (1 - acc), "seconds": 600 * (1 - acc)},
        "probe": {"type": "probe", "status": "ok", "decode_nll": scale, "decode_error": scale,
                  "prompt_error": scale / 2, "arrays": "probe/probe.safetensors"},
    }
    run.mkdir(exist_ok=True)
    (run / "recipe.resolved.yaml").write_text(yaml.safe_dump(recipe))
    (run / "metrics.json").write_text(json.dumps({"evaluate": evaluate, "stages": {}}))
    (run / "status.json").write_text(json.dumps({"evaluate": {"status": "done", "artifact": str(artifact)}}))
    return run


@pytest.fixture()
def grid_dir(tmp_path) -> Path:
    root = tmp_path / "grid"
    for sparsity, kind in ACC:
        make_run(root, sparsity, kind)
    return root


@pytest.fixture()
def probe_arrays():
    """Factory: synthetic per-token probe arrays of 3 problems with errors scaled by ``scale``."""
    return _probe_arrays
