"""Stage hessian: calibration set saved, exact Hessians stored under chain-hash keys."""

from __future__ import annotations

import copy

import pytest
import torch

from rac.engine.cache import Cache
from rac.engine.stage import StageContext
from rac.recipe.settings import recipe_settings
from rac.stages import hessian

RECIPE = {
    "model": {"id": None, "dtype": "float32"},
    "calibration": {"kind": "prompt", "sources": [{"dataset": "gsm8k_train", "field": "question"}],
                    "budget": {"tokens": None, "prompts": 5}, "max_prompt_tokens": 512,
                    "render": {"chat_template": True, "system_prompt": None, "prefix": ""},
                    "weights": {"prompt": 1.0, "decode": 1.0}, "seed": 0},
    "prune": {"method": "sparsegpt", "sparsity": 0.5, "sequential": True, "batch_size": 2},
}


@pytest.fixture()
def recipe(tiny_model_dir):
    data = copy.deepcopy(RECIPE)
    data["model"]["id"] = str(tiny_model_dir)
    return data


def _ctx(recipe, tmp_path, name, cache):
    out = tmp_path / name
    out.mkdir()
    return StageContext(recipe=recipe, out_dir=out, inputs={}, cache=cache, device="cpu", model_identity="",
                        run_dir=tmp_path)


def _blobs(cache: Cache) -> list:
    return sorted((cache.root / "blobs" / hessian.HESSIAN_KIND).glob("*.safetensors"))


def test_true_sequential_stores_only_block0_attn_in(recipe, tmp_path):
    cache = Cache(tmp_path / "c")  # the default order: later groups depend on pruning inside block 0
    summary = hessian.run(_ctx(recipe, tmp_path, "h", cache))
    assert summary["exact_blocks"] == 1 and summary["hessians_computed"] == 1
    base = hessian.base_key(hessian.calibration_fingerprint(tmp_path / "h"), hessian.model_identity(
        _ctx(recipe, tmp_path, "x", cache)), recipe_settings(recipe))
    assert len(_blobs(cache)) == 1
    key = hessian.hessian_key(base, 0, "attn_in", hessian.EMPTY_UPSTREAM)
    assert hessian.load_hessian(_ctx(recipe, tmp_path, "y", cache), key, "attn_in") is not None


def test_one_pass_sequential_mode_stores_block0_only(recipe, tmp_path):
    recipe["prune"]["true_sequential"] = False
    cache = Cache(tmp_path / "c")
    summary = hessian.run(_ctx(recipe, tmp_path, "h", cache))
    assert (tmp_path / "h" / "calibration.safetensors").is_file() and (tmp_path / "h" / "calibration.json").is_file()
    assert summary["sequences"] == 5 and summary["exact_blocks"] == 1 and summary["hessians_computed"] == 4
    blobs = _blobs(cache)
    assert len(blobs) == 4  # attn_in (one for q/k/v), attn_out, mlp_in (one for gate/up), mlp_out
    base = hessian.base_key(hessian.calibration_fingerprint(tmp_path / "h"), hessian.model_identity(
        _ctx(recipe, tmp_path, "x", cache)), recipe_settings(recipe))
    H, total = hessian.load_hessian(_ctx(recipe, tmp_path, "y", cache),
                                    hessian.hessian_key(base, 0, "attn_in", hessian.EMPTY_UPSTREAM), "attn_in")
    assert H.shape == (64, 64) and H.dtype == torch.float32 and torch.allclose(H, H.T, atol=1e-4)
    assert total == pytest.approx(summary["tokens"])  # prompt weight 1.0 on every real token
    again = hessian.run(_ctx(recipe, tmp_path, "h2", cache))
    assert again["hessians_cached"] == 4 and again["hessians_computed"] == 0


def test_dense_mode_stores_every_block(recipe, tmp_path):
    recipe["prune"]["sequential"] = False
    cache = Cache(tmp_path / "c")
    summary = hessian.run(_ctx(recipe, tmp_path, "h", cache))
    assert summary["exact_blocks"] == 2 and len(_blobs(cache)) == 8


def test_keys_depend_on_upstream_and_calibration():
    settings = recipe_settings(RECIPE)
    base = hessian.base_key("calib-a", "model", settings)
    assert base != hessian.base_key("calib-b", "model", settings)
    chain = hessian.Upstream()
    dense = hessian.hessian_key(base, 1, "attn_in", chain.digest)
    chain.add({"block": 0, "module": "q_proj", "method": "sparsegpt", "sparsity": 0.5})
    assert hessian.hessian_key(base, 1, "attn_in", chain.digest) != dense
    assert hessian.hessian_key(base, 1, "attn_out", hessian.EMPTY_UPSTREAM) != dense
    assert hessian.STAGE.enabled({"prune": {"sparsity": 0.5}}) and not hessian.STAGE.enabled({})


def test_background_writer_stores_and_reports_failures(tmp_path):
    cache = Cache(tmp_path / "c")
    ctx = StageContext(recipe={}, out_dir=tmp_path, inputs={}, cache=cache, device="cpu", model_identity="m",
                       run_dir=tmp_path)
    writer = hessian.HessianWriter(ctx)
    H = torch.eye(4)
    writer.put("k1", "attn_in", H, 3.0, 0)
    writer.close()
    loaded, total = hessian.load_hessian(ctx, "k1", "attn_in")
    assert torch.equal(loaded, H) and total == 3.0

    class Broken:
        def put_blob(self, *args, **kwargs):
            raise OSError("disk full")

    ctx.cache = Broken()
    writer = hessian.HessianWriter(ctx)
    writer.put("k2", "attn_in", H, 1.0, 0)
    with pytest.raises(OSError, match="disk full"):
        writer.close()


def test_hessian_keys_follow_the_code_that_computes_them(monkeypatch):
    """Editing the Hessian / replay / pruning code changes every Hessian key (no version bump needed)."""
    import rac.engine.inputs as inputs

    settings = recipe_settings(RECIPE)
    files = inputs.code_files("rac.stages.prune")
    names = {f.relative_to(inputs.RAC_ROOT).as_posix() for f in files}
    assert {"algorithms/hessian.py", "models/capture.py", "stages/hessian.py", "algorithms/sparsegpt.py"} <= names
    base = hessian.base_key("calib", "model", settings)
    monkeypatch.setattr(inputs, "module_code_digest", lambda module: "edited")
    assert hessian.base_key("calib", "model", settings) != base
