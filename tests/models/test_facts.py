"""Model facts from the config alone: no weights read, no GGUF conversion, nothing written to the cache."""

from __future__ import annotations

import pytest

from rac.models import facts as F


@pytest.fixture
def offline(monkeypatch):
    """The hub is unreachable (whatever this machine's network)."""
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)


def test_local_folder_facts_match_the_real_model(tiny_model_dir, tiny_llama):
    model, _ = tiny_llama
    facts = F.model_facts({"id": str(tiny_model_dir)})
    assert facts.n_blocks == 2 and not facts.from_table
    assert facts.params == sum(p.numel() for p in model.parameters())  # tied embeddings counted once
    shapes = {lin.name: (lin.input_key, lin.in_features, lin.out_features) for lin in facts.block_linears}
    assert shapes["down_proj"] == ("mlp_out", 128, 64)
    assert shapes["k_proj"] == ("attn_in", 64, 32)  # 2 KV heads of 16
    assert facts.kv_bytes_per_token(4) == 2 * 2 * 2 * 16 * 4


def test_builtin_alias_needs_no_conversion(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("RAC_CACHE", str(cache))
    facts = F.model_facts({"id": "smollm2-135m"})
    assert (facts.n_blocks, facts.hidden_size, facts.params) == (30, 576, 134_515_008)
    assert F.model_depth({"id": "smollm2-135m"}) == 30
    F.plan_identity({"id": "smollm2-135m"})
    assert not cache.exists()  # no GGUF conversion into the cache


def test_plan_identity_of_the_builtin_equals_the_loaders(tmp_path, monkeypatch):
    """The plan's identity (no conversion) must be the one the stages fingerprint with."""
    from rac.models import load

    monkeypatch.setenv("RAC_CACHE", str(tmp_path))

    def fake_convert(gguf, target):  # stands in for the 30 s conversion; the identity does not depend on it
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")

    monkeypatch.setattr(load, "_convert_gguf", fake_convert)
    assert F.plan_identity({"id": "smollm2-135m"}) == load.resolve_model({"id": "smollm2-135m"}).identity


def test_hub_offline_falls_back_to_the_table_and_says_so(offline):
    facts = F.model_facts({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"})
    assert facts.from_table and "rac's table of known configs" in facts.source
    assert facts.n_blocks == 28
    with pytest.raises(F.FactsUnavailable) as exc:
        F.model_facts({"id": "someorg/unknown-model"})
    assert str(exc.value) == "someorg/unknown-model: hub unreachable (OSError)"
    with pytest.raises(F.FactsUnavailable) as exc:
        F.plan_identity({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B"})
    assert "\n" not in str(exc.value) and "hub unreachable" in str(exc.value)


@pytest.mark.parametrize("model_id, billions, blocks", [
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", 1.78, 28),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", 7.62, 28),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B", 14.77, 48),
    ("deepseek-ai/DeepSeek-R1-Distill-Qwen-32B", 32.76, 64),
])
def test_known_configs_give_the_published_sizes(model_id, billions, blocks):
    entry = F.known_configs()[model_id]
    facts = F.facts_from_config(entry["config"], model_id, entry["source"], from_table=True)
    assert facts.params / 1e9 == pytest.approx(billions, rel=0.005)
    assert facts.n_blocks == blocks


def test_depth_offline_only(tiny_model_dir, offline):
    assert F.model_depth({"id": str(tiny_model_dir)}) == 2
    assert F.model_depth({"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"}) == 48  # table
    assert F.model_depth({"id": "someorg/unknown-model"}) is None
    assert F.model_depth(None) is None


@pytest.mark.slow
def test_bundled_builtin_config_matches_its_gguf_metadata():
    """The bundled config of smollm2-135m is the GGUF's own metadata (read here: ~20 s)."""
    from gguf import GGUFReader

    from rac.models.load import _builtin_gguf

    fields = GGUFReader(str(_builtin_gguf("smollm2-135m")[0])).fields
    config = F.known_configs()["smollm2-135m"]["config"]
    arch = fields["general.architecture"].contents()
    assert config["num_hidden_layers"] == fields[f"{arch}.block_count"].contents()
    assert config["hidden_size"] == fields[f"{arch}.embedding_length"].contents()
    assert config["intermediate_size"] == fields[f"{arch}.feed_forward_length"].contents()
    assert config["num_attention_heads"] == fields[f"{arch}.attention.head_count"].contents()
    assert config["num_key_value_heads"] == fields[f"{arch}.attention.head_count_kv"].contents()
    assert config["vocab_size"] == len(fields["tokenizer.ggml.tokens"].data)
