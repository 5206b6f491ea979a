"""Shared fixtures: a real small tokenizer and tiny random Qwen2 / Llama models (2 layers)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURES / "smollm2_tokenizer"))


def _tiny(arch: str, tokenizer, seed: int = 0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    if arch == "llama":
        model = LlamaForCausalLM(LlamaConfig(**common))
    else:
        model = Qwen2ForCausalLM(Qwen2Config(**common))
    return model.eval()


@pytest.fixture()
def tiny_llama(tokenizer):
    """(model, tokenizer): a 2-layer random Llama with the SmolLM2 tokenizer."""
    return _tiny("llama", tokenizer), tokenizer


@pytest.fixture()
def tiny_qwen2(tokenizer):
    """(model, tokenizer): a 2-layer random Qwen2 with the SmolLM2 tokenizer."""
    return _tiny("qwen2", tokenizer), tokenizer


@pytest.fixture(params=["llama", "qwen2"])
def tiny_model(request, tokenizer):
    """Parametrized over both architectures."""
    return _tiny(request.param, tokenizer), tokenizer


@pytest.fixture()
def tiny_model_dir(tmp_path, tiny_llama):
    """A saved HF folder (safetensors + tokenizer) of the tiny Llama, for loaders and stages."""
    model, tok = tiny_llama
    path = tmp_path / "tiny-llama"
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def _padded_batch(rows: list[list[int]], weight_of=lambda mask: mask.float()) -> dict:
    """A right-padded replay batch of token rows; ``weight_of(mask)`` gives the per-token weights."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_weight": weight_of(mask)}


@pytest.fixture()
def padded_batch():
    """The batch builder above (fixtures are how test modules share helpers here)."""
    return _padded_batch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own RAC_CACHE so nothing leaks between tests or into ~/.cache."""
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "rac-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray cluster shared by the cluster tests (started once: starting Ray takes seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
