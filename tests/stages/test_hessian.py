"""Stage hessian: calibration set saved, exact Hessians stored under chain-hash keys."""

from __future__ import annotations

import pytest
import torch

from rac.calibration import hessian_store as hs
from rac.pipeline.cache import Cache
from rac.recipe import RecipeError
from rac.recipe.settings import recipe_settings
from rac.stages import hessian

PRUNE = {"method": "sparsegpt", "sparsity": 0.5, "sequential": True, "batch_size": 2}


@pytest.fixture()
def tiny_recipe(recipe, tiny_model_dir):
    """``tiny_recipe(**overrides)``: 5 GSM8K prompts, SparseGPT 50% on the tiny Llama."""
    return lambda **overrides: recipe(**{"model.id": tiny_model_dir, "calibration.budget.prompts": 5,
                                         "prune": PRUNE, **overrides})


def _blobs(cache: Cache) -> list:
    return sorted((cache.root / "blobs" / hs.HESSIAN_KIND).glob("*.safetensors"))


def test_true_sequential_stores_only_block0_attn_in(tiny_recipe, stage_ctx, tmp_path):
    recipe = tiny_recipe()
    cache = Cache(tmp_path / "c")  # the default order: later groups depend on pruning inside block 0
    summary = hessian.run(stage_ctx(recipe, "h", cache=cache))
    assert summary["exact_blocks"] == 1 and summary["hessians_computed"] == 1
    base = hs.replay_base_key(recipe_settings(recipe), "", tmp_path / "h")
    assert len(_blobs(cache)) == 1
    key = hs.hessian_key(base, 0, "attn_in", hs.EMPTY_UPSTREAM)
    assert hs.HessianStore(cache).load(key, "attn_in") is not None


def test_one_pass_sequential_mode_stores_block0_only(tiny_recipe, stage_ctx, tmp_path):
    recipe = tiny_recipe(**{"prune.true_sequential": False})
    cache = Cache(tmp_path / "c")
    summary = hessian.run(stage_ctx(recipe, "h", cache=cache))
    assert (tmp_path / "h" / "calibration.safetensors").is_file() and (tmp_path / "h" / "calibration.json").is_file()
    assert summary["sequences"] == 5 and summary["exact_blocks"] == 1 and summary["hessians_computed"] == 4
    blobs = _blobs(cache)
    assert len(blobs) == 4  # attn_in (one for q/k/v), attn_out, mlp_in (one for gate/up), mlp_out
    base = hs.replay_base_key(recipe_settings(recipe), "", tmp_path / "h")
    H, total = hs.HessianStore(cache).load(hs.hessian_key(base, 0, "attn_in", hs.EMPTY_UPSTREAM), "attn_in")
    assert H.shape == (64, 64) and H.dtype == torch.float32 and torch.allclose(H, H.T, atol=1e-4)
    assert total == pytest.approx(summary["tokens"])  # prompt weight 1.0 on every real token
    again = hessian.run(stage_ctx(recipe, "h2", cache=cache))
    assert again["hessians_cached"] == 4 and again["hessians_computed"] == 0


def test_dense_mode_stores_every_block(tiny_recipe, stage_ctx, tmp_path):
    cache = Cache(tmp_path / "c")
    summary = hessian.run(stage_ctx(tiny_recipe(**{"prune.sequential": False}), "h", cache=cache))
    assert summary["exact_blocks"] == 2 and len(_blobs(cache)) == 8


def test_keys_depend_on_upstream_calibration_and_storage(recipe):
    base = hs.base_key("calib-a", "model", "float32", 2)
    assert base != hs.base_key("calib-b", "model", "float32", 2)
    assert base != hs.base_key("calib-a", "model", "float32", 2, "bfloat16-upper")
    chain = hs.Upstream()
    dense = hs.hessian_key(base, 1, "attn_in", chain.digest)
    chain.add({"block": 0, "module": "q_proj", "method": "sparsegpt", "sparsity": 0.5})
    assert hs.hessian_key(base, 1, "attn_in", chain.digest) != dense
    assert hs.hessian_key(base, 1, "attn_out", hs.EMPTY_UPSTREAM) != dense
    assert hessian.STAGE.enabled(recipe(**{"model.id": "m", "prune": PRUNE}))
    assert not hessian.STAGE.enabled(recipe(**{"model.id": "m"}))


def test_background_writer_stores_and_reports_failures(tmp_path):
    cache = Cache(tmp_path / "c")
    store = hs.HessianStore(cache)
    H = torch.eye(4)
    assert store.put("k1", "attn_in", H, 3.0, 0, hs.EMPTY_UPSTREAM)
    store.close()
    loaded, total = hs.HessianStore(cache).load("k1", "attn_in")
    assert torch.equal(loaded, H) and total == 3.0

    class Broken:
        def put_blob(self, *args, **kwargs):
            raise OSError("disk full")

    store = hs.HessianStore(Broken())  # type: ignore[arg-type]
    store.put("k2", "attn_in", H, 1.0, 0, hs.EMPTY_UPSTREAM)
    with pytest.raises(OSError, match="disk full"):
        store.close()


@pytest.mark.parametrize("storage", ["float32-upper", "bfloat16-upper"])
def test_upper_triangle_storage_round_trips(tmp_path, storage):
    X = torch.randn(50, 6)
    H = X.T @ X
    packed = hs.pack(H, storage)
    assert packed.numel() == 21 and packed.dtype == (torch.bfloat16 if storage.startswith("b") else torch.float32)
    back = hs.unpack(packed, storage)
    assert torch.equal(back, back.T)
    assert torch.allclose(back, H, rtol=1e-2 if storage.startswith("b") else 1e-5, atol=1e-3)
    store = hs.HessianStore(Cache(tmp_path / "c"), hs.StorePolicy(keep="all", storage=storage))
    store.put("k", "attn_in", H, 2.0, 0, "x")
    store.close()
    loaded, _ = hs.HessianStore(Cache(tmp_path / "c"), store.policy).load("k", "attn_in")
    assert torch.equal(loaded, store.canonical(H))  # a hit equals a freshly computed Hessian


def test_retention_policies_and_cap(tmp_path):
    H = torch.eye(100)  # 40 kB in float32
    for keep, expected in (("reusable", {"dense", "req"}), ("all", {"dense", "other", "req"}), ("none", {"req"})):
        store = hs.HessianStore(Cache(tmp_path / keep), hs.StorePolicy(keep=keep))
        store.put("dense", "g", H, 1.0, 0, hs.EMPTY_UPSTREAM)
        store.put("other", "g", H, 1.0, 1, "digest")
        store.put("req", "g", H, 1.0, 1, "digest", required=True)
        store.close()
        assert {k for k in ("dense", "other", "req") if store.has(k)} == expected, keep
    capped = hs.HessianStore(Cache(tmp_path / "cap"), hs.StorePolicy(keep="all", max_bytes=100_000))
    kept = [capped.put(f"k{i}", "g", H, 1.0, i, "d") for i in range(4)]
    capped.close()
    assert kept == [True, True, False, False] and capped.stats()["hessian_bytes_stored"] == 80_000
    with pytest.raises(ValueError, match="keep_hessians"):
        hs.StorePolicy(keep="some")


def test_hessian_keys_follow_the_code_that_computes_them(recipe, monkeypatch, tmp_path):
    """Editing the Hessian / replay / pruning code changes every Hessian key (no version bump needed)."""
    import rac.pipeline.inputs as inputs
    from rac.calibration.mix import CALIB_TENSORS

    settings = recipe_settings(recipe(**{"model.id": "m", "prune": PRUNE}))
    files = inputs.code_files("rac.stages.prune")
    names = {f.relative_to(inputs.RAC_ROOT).as_posix() for f in files}
    assert {"algorithms/hessian.py", "models/capture.py", "calibration/hessian_store.py",
            "algorithms/sparsegpt.py"} <= names
    (tmp_path / CALIB_TENSORS).write_bytes(b"calibration")
    base = hs.replay_base_key(settings, "model", tmp_path)
    monkeypatch.setattr(inputs, "module_code_digest", lambda module: "edited")
    assert hs.replay_base_key(settings, "model", tmp_path) != base


def test_position_weights_without_decode_tokens_fail_before_any_hessian(tiny_recipe):
    """The loader rejects the recipe (file:line:col of the key) before the stage could compute anything."""
    with pytest.raises(RecipeError, match=r"recipe-1\.yaml:\d+:\d+: \$\.calibration\.weights\.position\.kind: "
                                          r"position weights \(tail\) act on decode tokens"):
        tiny_recipe(**{"calibration.weights.position": {"kind": "tail"}})
