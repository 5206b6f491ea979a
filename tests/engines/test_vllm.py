"""vLLM engine: what it asks vLLM to load (a stand-in ``vllm`` module, always run), and the engine for real
(slow; needs vllm, e.g. the vllm-cpu build): same artifact format as hf."""

from __future__ import annotations

import importlib.util
import logging
import sys
import types
from pathlib import Path

import pytest

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture()
def standin_vllm(monkeypatch):
    """A ``vllm`` module whose ``LLM`` records its constructor arguments (what would be loaded)."""
    calls: list[dict] = []

    class LLM:
        def __init__(self, **kwargs):
            calls.append(kwargs)

    module = types.ModuleType("vllm")
    module.LLM = LLM
    monkeypatch.setitem(sys.modules, "vllm", module)
    return calls


def _start(spec: dict):
    from rac.engines.vllm import VLLMEngine

    return VLLMEngine.from_spec(spec, "cpu", None, {"max_model_len": 128})


def test_hub_model_is_pinned_to_the_identity_commit_and_safetensors_only(standin_vllm, tmp_path, monkeypatch):
    import huggingface_hub

    import rac.models.load as load

    snapshot = tmp_path / "hub" / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: str(snapshot))
    tokenizer_refs = []
    monkeypatch.setattr(load, "load_tokenizer", lambda ref, trust=False: tokenizer_refs.append(ref) or object())
    spec = {"id": "some-org/some-model", "revision": "main"}
    _start(spec)
    (kwargs,) = standin_vllm
    assert kwargs["model"] == "some-org/some-model"
    assert kwargs["revision"] == kwargs["tokenizer_revision"] == kwargs["code_revision"] == COMMIT
    assert kwargs["load_format"] == "safetensors" and kwargs["trust_remote_code"] is False
    assert load.resolve_model(spec).revision == COMMIT and tokenizer_refs[0].revision == COMMIT


def test_local_folder_loads_safetensors_only(standin_vllm, tiny_model_dir):
    engine = _start({"id": str(tiny_model_dir)})
    (kwargs,) = standin_vllm
    assert kwargs["model"] == str(tiny_model_dir) and kwargs["load_format"] == "safetensors"
    assert "revision" not in kwargs and engine.tokenizer.pad_token is not None


def test_gguf_path_gets_the_converted_checkpoint(standin_vllm, tmp_path, gguf_writer):
    file = tmp_path / "tiny.gguf"
    gguf_writer(file)
    _start({"id": str(file)})
    (kwargs,) = standin_vllm
    folder = Path(kwargs["model"])
    assert folder.is_dir() and (folder / "model.safetensors").is_file() and (folder / "config.json").is_file()
    assert kwargs["tokenizer"] == str(folder) and kwargs["load_format"] == "safetensors"


@pytest.fixture()
def vllm_model_dir(tmp_path, tokenizer):
    """A tiny random Llama that vLLM's CPU attention accepts (head_dim 64; the shared fixture has 16).

    A large init range makes the next-token distribution peaked, so greedy decoding is not decided by
    rounding differences between the two engines' kernels."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         initializer_range=0.2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         tie_word_embeddings=True)
    path = tmp_path / "tiny-vllm"
    LlamaForCausalLM(config).eval().save_pretrained(path, safe_serialization=True)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture()
def vllm_env(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "1")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # vLLM reads a local folder; keep its defaults


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed")
def test_vllm_generations_and_rollout_artifact_match_the_hf_format(tmp_path, vllm_model_dir, tokenizer, vllm_env,
                                                                     recipe, stage_ctx, monkeypatch):
    """One vLLM engine (starting one costs ~40 s on CPU): the rollout stage builds it from the recipe, and the
    same engine then answers the direct checks (seeded sampling, greedy equals transformers)."""
    from rac.calibration.rollouts import read_rollouts
    from rac.engines import factory
    from rac.engines.base import SamplingConfig
    from rac.engines.hf import HFEngine
    from rac.models.load import load_model
    from rac.pipeline.cache import Cache
    from rac.stages.rollout import STAGE

    spec = {"id": str(vllm_model_dir), "dtype": "float32"}
    built: list = []
    real_get_engine = factory.get_engine

    def keep_vllm_open(name, *args, **kwargs):
        engine = real_get_engine(name, *args, **kwargs)
        if name == "vllm":
            built.append(engine)
            monkeypatch.setattr(engine, "close", lambda: None)  # closed at the end of this test
        return engine

    monkeypatch.setattr(factory, "get_engine", keep_vllm_open)

    def rollout(engine_name, name):
        data = recipe(**{"model": spec, "calibration": {
            "kind": "rac", "sources": [{"dataset": "gsm8k_train"}], "budget": {"tokens": None, "prompts": 3},
            "max_prompt_tokens": 256,
            "seed": 0, "rollout": {"engine": engine_name, "t_max": 6, "temperature": 0.0, "top_p": 1.0, "batch_size": 4,
                                   "vllm": {"gpu_memory_utilization": 0.3, "enforce_eager": True, "max_model_len": 512}}}})
        ctx = stage_ctx(data, name, cache=Cache(tmp_path / "c"), model_identity="tiny")
        out = ctx.out_dir
        STAGE.run(ctx)
        return read_rollouts(out)

    try:
        via_vllm, via_hf = rollout("vllm", "v"), rollout("hf", "h")
        assert len(built) == 1, "the vllm rollout builds one vLLM engine"
        engine = built[0]
        assert via_vllm.prompt_ids == via_hf.prompt_ids
        assert via_vllm.completion_ids == via_hf.completion_ids  # greedy: the same tokens
        strip = lambda r: {k: v for k, v in r.items() if k != "text"}
        assert [sorted(r) for r in via_vllm.records] == [sorted(r) for r in via_hf.records]
        assert [strip(r) for r in via_vllm.records] == [strip(r) for r in via_hf.records]
        assert via_vllm.provenance["engine_version"].startswith("vllm")

        prompts = [tokenizer("a b c d")["input_ids"], tokenizer("hello there")["input_ids"]]
        sampling = SamplingConfig(max_new_tokens=5, temperature=0.8, seed=1, n=2)
        first = engine.generate(prompts, sampling)
        again = engine.generate(prompts, sampling)
        greedy = engine.generate(prompts, SamplingConfig(max_new_tokens=5, temperature=0.0))
    finally:
        for engine in built:
            type(engine).close(engine)
    assert [[g.completion_ids for g in row] for row in first] == [[g.completion_ids for g in row] for row in again]
    for prompt, row in zip(prompts, first):
        assert len(row) == 2
        for gen in row:
            assert gen.prompt_ids == prompt and gen.finish_reason in ("stop", "length")
            assert gen.text == tokenizer.decode(gen.completion_ids, skip_special_tokens=True)
            assert gen.finish_reason == "stop" or len(gen.completion_ids) == 5
    hf = HFEngine(*load_model(spec, "cpu"))
    hf_greedy = hf.generate(prompts, SamplingConfig(max_new_tokens=5, temperature=0.0))
    assert [r[0].completion_ids for r in greedy] == [r[0].completion_ids for r in hf_greedy]


class _Handle:
    def __init__(self, total):
        self.total, self.done, self.closed = total, 0, False

    def advance(self, n=1):
        self.done += n

    def close(self):
        self.closed = True


class _Progress:
    def __init__(self):
        self.handles: list[_Handle] = []

    def task(self, description, total):
        self.handles.append(_Handle(total))
        return self.handles[-1]


def test_vllm_progress_reaches_rac_progress(monkeypatch, tokenizer, caplog):
    """vLLM's offline generate drives ``use_tqdm`` (a callable) per finished request; rac's progress follows."""
    from rac.engines.base import SamplingConfig
    from rac.engines.vllm import VLLMEngine

    seen: list[int] = []

    class LLM:  # drives the bar exactly as vllm/entrypoints/common/offline.py does
        def generate(self, requests, params, use_tqdm=True):
            assert callable(use_tqdm)
            added = list(use_tqdm(requests, desc="Adding requests"))  # vllm/utils/tqdm_utils.maybe_tqdm
            assert added == list(requests)
            pbar = use_tqdm(total=len(requests), desc="Processed prompts", dynamic_ncols=True,
                            postfix="est. speed input: 0.00 toks/s, output: 0.00 toks/s")
            outs = []
            for p in params:
                completions = [types.SimpleNamespace(index=j, token_ids=[5, 6], finish_reason="length")
                               for j in range(p.n)]
                outs.append(types.SimpleNamespace(outputs=completions))
                speed = 2 * p.n / pbar.format_dict["elapsed"]
                pbar.postfix = f"est. speed input: 1.00 toks/s, output: {speed:.2f} toks/s"
                pbar.update(1)
                seen.append(handles.handles[0].done)
                if pbar.n == len(requests):
                    pbar.refresh()
            pbar.close()
            return outs

    module = types.ModuleType("vllm")
    module.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = lambda prompt_token_ids: prompt_token_ids
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    handles = _Progress()
    engine = VLLMEngine(LLM(), tokenizer)
    with caplog.at_level(logging.INFO, logger="rac.engines.vllm"):
        out = engine.generate([[1, 2], [3], [4]], SamplingConfig(max_new_tokens=2, n=2), progress=handles)
    (handle,) = handles.handles
    assert seen == [2, 4, 6] and handle.done == handle.total == 6 and handle.closed  # advanced as requests finish
    assert len(out) == 3 and all(len(row) == 2 for row in out)
    assert "3/3 requests done" in caplog.text and "output:" in caplog.text
