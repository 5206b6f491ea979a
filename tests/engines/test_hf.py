"""HF generate engine: ordering, determinism with a seed, n samples, finish reasons."""

from __future__ import annotations

import pytest
import torch

from rac.engines.base import EngineError, SamplingConfig
from rac.engines.factory import get_engine
from rac.engines.hf import HFEngine


@pytest.fixture()
def prompts(tokenizer):
    return [tokenizer(t)["input_ids"] for t in ("a b c d e f g", "hello", "one two three")]


def test_same_seed_same_tokens_other_seed_other_tokens(tiny_model, prompts):
    engine = HFEngine(*tiny_model, batch_size=2)
    sampling = SamplingConfig(max_new_tokens=6, temperature=1.0, seed=3, n=2)
    torch.manual_seed(123)
    first = engine.generate(prompts, sampling)
    state = torch.random.get_rng_state()
    second = engine.generate(prompts, sampling)
    assert torch.equal(state, torch.random.get_rng_state())  # the caller's RNG is left alone
    other = engine.generate(prompts, SamplingConfig(max_new_tokens=6, temperature=1.0, seed=4, n=2))
    ids = lambda res: [[g.completion_ids for g in row] for row in res]
    assert ids(first) == ids(second) != ids(other)
    assert [len(row) for row in first] == [2, 2, 2]
    assert ids(first)[0][0] != ids(first)[0][1]  # the n samples of a prompt differ
    for prompt, row in zip(prompts, first):  # results come back in prompt order despite length sorting
        assert all(g.prompt_ids == prompt for g in row)
    assert engine.last_stats["tokens"] == 36 and engine.last_stats["tokens_per_s"] > 0


def test_greedy_batched_equals_one_at_a_time(tiny_llama, prompts):
    engine = HFEngine(*tiny_llama, batch_size=3)
    greedy = SamplingConfig(max_new_tokens=5, temperature=0.0)
    batched = engine.generate(prompts, greedy)
    single = [engine.generate([p], greedy)[0] for p in prompts]
    assert [r[0].completion_ids for r in batched] == [r[0].completion_ids for r in single]


def test_finish_reasons_length_and_stop(tiny_llama, prompts):
    model, tok = tiny_llama
    engine = HFEngine(model, tok, batch_size=4)
    gens = engine.generate(prompts, SamplingConfig(max_new_tokens=4, temperature=0.0))
    first = gens[0][0]
    assert first.finish_reason == "length" and len(first.completion_ids) == 4
    assert first.text == tok.decode(first.completion_ids, skip_special_tokens=True)
    # make the first greedy token of every prompt an end-of-sequence token
    stopper = {row[0].completion_ids[0] for row in gens}
    model.generation_config.eos_token_id = [tok.eos_token_id, *stopper]
    engine = HFEngine(model, tok, batch_size=4)
    for row in engine.generate(prompts, SamplingConfig(max_new_tokens=4, temperature=0.0)):
        assert row[0].finish_reason == "stop" and len(row[0].completion_ids) == 1


def test_engine_from_a_saved_model_folder(tiny_model_dir, prompts):
    engine = get_engine("hf", {"id": str(tiny_model_dir), "dtype": "float32"}, "cpu", None, {"batch_size": 2})
    assert isinstance(engine, HFEngine) and engine.batch_size == 2
    assert "transformers" in engine.version()
    assert len(engine.generate(prompts[:1], SamplingConfig(max_new_tokens=2))[0]) == 1
    with pytest.raises(EngineError, match="empty prompt"):
        engine.generate([[]], SamplingConfig(max_new_tokens=2))


# --- CPU fast path: packed / transposed-stride weights + static KV cache ------------------------------------


@pytest.fixture()
def ragged(tokenizer):
    """Prompts of clearly different lengths, so every batch is left-padded."""
    texts = ("one two three four five six seven eight nine ten", "hi", "a b c", "the cat sat on the mat today")
    return [tokenizer(t)["input_ids"] for t in texts]


def _ids(result):
    return [[g.completion_ids for g in row] for row in result]


def test_fast_path_gives_the_plain_greedy_tokens_with_padding_and_eos(tiny_model, ragged):
    model, tok = tiny_model
    greedy = SamplingConfig(max_new_tokens=10, temperature=0.0)
    plain = HFEngine(model, tok, batch_size=3, fast_cpu=False)
    fast = HFEngine(model, tok, batch_size=3, fast_cpu=True)
    assert fast.fast and not plain.fast and HFEngine(model, tok).fast  # auto = on for a CPU model
    reference = plain.generate(ragged, greedy)
    assert _ids(fast.generate(ragged, greedy)) == _ids(reference)
    # stop some rows early (a token from the middle of one completion becomes an EOS) while others run on
    model.generation_config.eos_token_id = [tok.eos_token_id, reference[0][0].completion_ids[3]]
    plain = HFEngine(model, tok, batch_size=3, fast_cpu=False)
    fast = HFEngine(model, tok, batch_size=3, fast_cpu=True)
    stopped = plain.generate(ragged, greedy)
    assert stopped[0][0].finish_reason == "stop" and len(stopped[0][0].completion_ids) <= 4
    assert any(row[0].finish_reason == "length" for row in stopped)
    again = fast.generate(ragged, greedy)
    assert _ids(again) == _ids(stopped)
    assert [r[0].finish_reason for r in again] == [r[0].finish_reason for r in stopped]


def test_fast_path_gives_the_plain_sampled_tokens_for_a_seed(tiny_model, ragged):
    model, tok = tiny_model
    sampling = SamplingConfig(max_new_tokens=8, temperature=0.8, top_p=0.9, seed=7, n=2)
    plain = HFEngine(model, tok, batch_size=4, fast_cpu=False).generate(ragged, sampling)
    fast = HFEngine(model, tok, batch_size=4, fast_cpu=True).generate(ragged, sampling)
    assert _ids(fast) == _ids(plain)


def test_fast_path_uses_the_fast_layout_and_leaves_the_model_untouched(tiny_llama, ragged):
    from rac.engines.cpu_linear import mkl_packing_available

    model, tok = tiny_llama
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    objects = {name: p for name, p in model.named_parameters()}
    proj = model.model.layers[0].mlp.up_proj
    seen: list[bool] = []
    hook = proj.register_forward_hook(lambda module, args, out: seen.append("forward" in module.__dict__))
    engine = HFEngine(model, tok, batch_size=3, fast_cpu=True)  # 4 prompts: batches of 3 and 1
    engine.generate(ragged, SamplingConfig(max_new_tokens=3, temperature=0.0))
    hook.remove()
    assert engine.layout == ("mkl-packed" if mkl_packing_available() else "transposed")
    if mkl_packing_available():
        assert seen and all(seen)  # every call went through the packed forward, hooks still ran
    assert model.lm_head.weight is model.model.embed_tokens.weight  # still tied
    assert all("forward" not in m.__dict__ for m in model.modules())
    for name, p in model.named_parameters():
        assert p is objects[name] and p.is_contiguous(), name
        assert torch.equal(p, before[name]), name


def test_weights_are_restored_when_generate_fails(tiny_llama, ragged):
    model, tok = tiny_llama

    def boom(module, args, out):
        raise RuntimeError("boom")

    hook = model.model.layers[1].self_attn.o_proj.register_forward_hook(boom)
    with pytest.raises(RuntimeError, match="boom"):
        HFEngine(model, tok, fast_cpu=True).generate(ragged, SamplingConfig(max_new_tokens=2, temperature=0.0))
    hook.remove()
    assert all(p.is_contiguous() for p in model.parameters())
    assert all("forward" not in m.__dict__ for m in model.modules())


def test_default_batch_size_and_bad_options(tiny_llama):
    from rac.engines.hf import CPU_BATCH_SIZE

    assert HFEngine(*tiny_llama).batch_size == CPU_BATCH_SIZE  # the model is on CPU
    with pytest.raises(EngineError, match="fast_cpu"):
        HFEngine(*tiny_llama, fast_cpu="yes")  # type: ignore[arg-type]
    with pytest.raises(EngineError, match="batch_size"):
        HFEngine(*tiny_llama, batch_size=0)
