"""The decode-fidelity probe: zero for dense vs itself, positive for a perturbed model."""

from __future__ import annotations

import copy

import torch

from rac.eval.probe import dense_reference, probe


def _prompts(tokenizer):
    return [tokenizer("What is 2 + 3?")["input_ids"], tokenizer("Name a colour.")["input_ids"]]


def test_dense_against_itself_is_exactly_zero(tiny_model):
    model, tok = tiny_model
    summary, arrays = probe(model, model, tok, _prompts(tok), t_max=6)
    assert summary["prompt_error"] == 0.0 and summary["decode_error"] == 0.0
    assert summary["decode_rel_error"] == 0.0
    assert summary["decode_nll"] == summary["dense_decode_nll"]
    total = int(arrays["offsets"][-1])
    assert arrays["abs_error"].shape == (total,) and arrays["nll"].shape == (total,)
    assert summary["mean_decode_length"] >= 1


def test_perturbed_model_has_error_and_nll_matches_logits(tiny_llama):
    model, tok = tiny_llama
    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        perturbed.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    summary, arrays = probe(model, perturbed, tok, _prompts(tok), t_max=4)
    assert summary["prompt_error"] > 0 and summary["decode_error"] > 0
    assert 0 < summary["decode_rel_error"] < 10
    # the NLL of the first sequence equals a direct computation from the full logits
    end = int(arrays["offsets"][1])
    ref = dense_reference(model, tok, _prompts(tok)[:1], t_max=4)
    seq = ref["input_ids"]
    logp = torch.log_softmax(perturbed(seq[None]).logits[0].float(), -1)
    direct = -logp[:-1].gather(-1, seq[1:, None])[:, 0]
    assert torch.allclose(direct, arrays["nll"][1:end], atol=1e-5)


def test_error_ratio_is_figure_2s_matrix():
    import pytest
    import torch

    from rac.eval.probe import error_ratio

    common = {"offsets": torch.tensor([0, 3, 5]), "prompt_len": torch.tensor([1, 1])}
    prompt_only = {**common, "abs_error": torch.tensor([1.0, 4.0, 6.0, 2.0, 9.0])}
    rac = {**common, "abs_error": torch.tensor([2.0, 2.0, 3.0, 2.0, 3.0])}
    out = error_ratio(prompt_only, rac)
    assert out["length"].tolist() == [3, 2] and out["prompt_len"].tolist() == [1, 1]
    assert out["ratio"][0].tolist() == [0.5, 2.0, 2.0]
    assert out["ratio"][1, :2].tolist() == [1.0, 3.0] and torch.isnan(out["ratio"][1, 2])
    with pytest.raises(ValueError, match="same dense rollouts"):
        error_ratio(prompt_only, {**rac, "offsets": torch.tensor([0, 2, 5])})
