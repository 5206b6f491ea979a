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
def demo_cache(tmp_path_factory) -> Path:
    """One rac cache for the SmolLM2 grids of a session (tests/test_golden.py, tests/test_paper_mirrors.py):
    the model is converted once, and the paper mirrors reuse the golden grid's rollouts and Hessians."""
    return tmp_path_factory.mktemp("demo-cache")


@pytest.fixture(scope="session")
def ray_cluster():
    """A local 2-CPU Ray cluster shared by the cluster tests (started once: starting Ray takes seconds)."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _permute(w, n_head: int):
    """llama.cpp's q/k row order (what transformers reverses when it reads a llama GGUF)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _write_tiny_gguf(path, drop: tuple[str, ...] = ()):
    """A 2-block float32 llama GGUF with a byte-level BPE tokenizer; returns the HF model it holds."""
    import gguf
    import numpy as np
    from transformers import LlamaConfig, LlamaForCausalLM
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = ["h e", "l l", "o Ġ", "he ll"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_to_unicode().values(),
              *("".join(m.split()) for m in merges)]
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokens), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(256)
    writer.add_embedding_length(32)
    writer.add_feed_forward_length(64)
    writer.add_head_count(4)
    writer.add_head_count_kv(2)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(tokens)
    writer.add_token_types([3, 3, 3] + [1] * (len(tokens) - 3))
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_chat_template("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                             "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight"}
    parts = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
             "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm"}
    for block in range(2):
        names.update({f"model.layers.{block}.{hf}.weight": f"blk.{block}.{g}.weight" for hf, g in parts.items()})
    state = model.state_dict()
    for hf_name, gguf_name in names.items():
        if gguf_name in drop:
            continue
        tensor = state[hf_name].numpy().astype(np.float32)
        if gguf_name.endswith("attn_q.weight"):
            tensor = _permute(tensor, 4)
        elif gguf_name.endswith("attn_k.weight"):
            tensor = _permute(tensor, 2)
        writer.add_tensor(gguf_name, tensor)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return model


@pytest.fixture()
def gguf_writer():
    """``write(path, drop=())``: a tiny float32 llama GGUF (tensors in ``drop`` left out); returns its HF model."""
    return _write_tiny_gguf
