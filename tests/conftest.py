"""Shared fixtures: a real small tokenizer, tiny random Qwen2 / Llama models (2 layers, or any depth
through ``save_tiny``), and recipes / stage contexts built the way the engine builds them."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from rac.pipeline.cache import Cache
from rac.pipeline.stage import ProgressReporter, StageContext
from rac.recipe import load_and_validate

FIXTURES = Path(__file__).parent / "fixtures"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(FIXTURES / "smollm2_tokenizer"))


def _tiny(arch: str, tokenizer, seed: int = 0, layers: int = 2):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
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


def _save_tiny(path: Path, tokenizer, arch: str = "llama", layers: int = 2) -> Path:
    """Save a tiny random model (seed 0) and the tokenizer as an HF folder; returns ``path``."""
    _tiny(arch, tokenizer, layers=layers).save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def save_tiny(tokenizer) -> Callable[..., Path]:
    """``save_tiny(path, arch="llama", layers=2)``: a saved tiny model folder of any depth."""
    return lambda path, arch="llama", layers=2: _save_tiny(Path(path), tokenizer, arch, layers)


@pytest.fixture()
def tiny_model_dir(tmp_path, tokenizer):
    """A saved HF folder (safetensors + tokenizer) of the tiny Llama, for loaders and stages."""
    return _save_tiny(tmp_path / "tiny-llama", tokenizer)


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


# -- recipes through the real loader, stage contexts like the engine's ------------------------------
DROP: Any = object()  # recipe(**{"prune": DROP}) leaves a key of the base recipe out

BASE_RECIPE: dict = {
    "version": 1,
    "model": {"dtype": "float32"},  # tests name the model: recipe(**{"model.id": path})
    "calibration": {"kind": "prompt", "sources": [{"dataset": "gsm8k_train", "field": "question"}],
                    "budget": {"tokens": None, "prompts": 4}, "max_prompt_tokens": 512, "seed": 0},
    "run": {"device": "cpu", "seed": 0},
}


def _plain(value: Any) -> Any:
    """YAML-ready data: paths as strings, tuples as lists."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def recipe_data(overrides: dict[str, Any], base: dict | None = None) -> dict:
    """``base`` (default BASE_RECIPE) with dotted-key ``overrides`` applied in order (``DROP`` deletes)."""
    data = copy.deepcopy(BASE_RECIPE if base is None else base)
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = data
        for key in parents:
            node = node.setdefault(key, {})
        if value is DROP:
            node.pop(leaf, None)
        else:
            node[leaf] = _plain(value)
    return data


@pytest.fixture()
def recipe(tmp_path) -> Callable[..., dict]:
    """``recipe(**overrides)``: the schema-filled, validated recipe dict the engine would run.

    Overrides are dotted keys on BASE_RECIPE (``recipe(**{"prune.sparsity": 0.7})``; a whole section:
    ``recipe(prune={...})``). The recipe is written to a YAML file under ``tmp_path`` and read by
    ``load_and_validate`` (machine checks such as installed engines left out), so a bad one fails with
    the loader's error naming the file, line and key.
    """
    counter = itertools.count(1)

    def build(**overrides: Any) -> dict:
        path = tmp_path / f"recipe-{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(recipe_data(overrides), sort_keys=False))
        return load_and_validate(path, environment=False).data

    return build


@pytest.fixture()
def rac_recipe_file(tmp_path) -> Callable[..., Path]:
    """``rac_recipe_file(model, tokens, t_max, **sections)``: ``tmp_path/tiny.yaml`` for CLI / engine runs.

    RAC calibration on GSM8K-train (``tokens`` budget, HF rollouts of ``t_max`` tokens), run on the CPU
    into ``tmp_path/runs``; ``sections`` (prune, evaluate, name, ...) are added as given. Not loaded here:
    the command under test reads it.
    """
    def write(model: Path, tokens: int, t_max: int, **sections: Any) -> Path:
        data = {"version": 1, **({"name": sections.pop("name")} if "name" in sections else {}),
                "model": {"id": model},
                "calibration": {"kind": "rac", "sources": [{"dataset": "gsm8k_train"}], "budget": {"tokens": tokens},
                                "rollout": {"engine": "hf", "t_max": t_max, "batch_size": 8}},
                **sections, "run": {"output_dir": tmp_path / "runs", "device": "cpu"}}
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(_plain(data), sort_keys=False))
        return path

    return write


@pytest.fixture()
def stage_ctx(tmp_path) -> Callable[..., StageContext]:
    """``stage_ctx(recipe, name=None, inputs=None, cache=None, ...)``: the StageContext a stage gets.

    Each call gets a fresh output folder ``tmp_path/<name>`` (default ``out1``, ``out2``, ...); the
    cache defaults to one per test under ``tmp_path/cache``. The typed settings are built at once,
    as the engine's plan does, so a recipe the settings reject fails here.
    """
    counter = itertools.count(1)
    shared: dict[str, Cache] = {}

    def build(recipe: dict, name: str | None = None, inputs: dict[str, Path] | None = None,
              cache: Cache | None = None, model_identity: str = "", run_dir: Path | None = None,
              progress: ProgressReporter | None = None) -> StageContext:
        out = tmp_path / (name or f"out{next(counter)}")
        out.mkdir(parents=True)
        if cache is None:
            cache = shared.setdefault("cache", Cache(tmp_path / "cache"))
        extra = {"progress": progress} if progress is not None else {}
        ctx = StageContext(recipe=recipe, out_dir=out, inputs=dict(inputs or {}), cache=cache, device="cpu",
                           model_identity=model_identity, run_dir=run_dir or tmp_path, **extra)
        ctx.settings  # noqa: B018 - the engine's plan builds them before any stage runs
        return ctx

    return build


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
