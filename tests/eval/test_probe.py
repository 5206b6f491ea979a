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


def test_termination_probe_at_the_dense_models_end(tiny_llama, monkeypatch):
    import rac.eval.probe as probe_module

    model, tok = tiny_llama
    eos = tok.eos_token_id
    # fixed dense rollouts: the first ends with EOS, the second is cut by t_max (no EOS)
    monkeypatch.setattr(probe_module, "greedy_rollouts", lambda *a, **k: [[11, 12, eos], [13, 14, 15]])
    summary, arrays = probe(model, model, tok, _prompts(tok), t_max=3)
    end = int(arrays["eos_pos"][0])
    assert end == int(arrays["offsets"][1]) - 1 and int(arrays["eos_pos"][1]) == -1
    assert summary["n_dense_eos"] == 1
    # dense against itself: the compressed probability equals the dense one (from the dense NLL)
    assert abs(summary["eos_prob_at_dense_end"] - summary["dense_eos_prob_at_dense_end"]) < 1e-5
    assert abs(summary["dense_eos_prob_at_dense_end"] - float(torch.exp(-arrays["dense_nll"][end]))) < 1e-6
    # no `</think>` token in the SmolLM2 vocabulary: no end-of-reasoning positions, reported as None
    assert summary["n_dense_reasoning_end"] == 0 and summary["reasoning_end_prob_at_dense_end"] is None

    perturbed = copy.deepcopy(model)
    with torch.no_grad():
        perturbed.model.layers[0].mlp.down_proj.weight.mul_(0.0)
    _, cut = probe(model, perturbed, tok, _prompts(tok), t_max=3)
    seq = torch.tensor(_prompts(tok)[0] + [11, 12, eos])
    with torch.no_grad():
        logits = perturbed(seq[None]).logits[0, -2].float()  # the prediction of the final (EOS) token
    assert abs(float(torch.softmax(logits, -1)[eos]) - float(cut["eos_prob_at_dense_end"][0])) < 1e-5
    assert int(cut["eos_rank_at_dense_end"][0]) == int((logits > logits[eos]).sum())
    assert int(cut["eos_rank_at_dense_end"][1]) == -1 and torch.isnan(cut["eos_prob_at_dense_end"][1])
    assert int(cut["reasoning_end_rank_at_dense_end"][0]) == -1


def test_end_positions() -> None:
    from rac.eval.probe import _end_position

    assert _end_position([5, 6, 2], 2, 10, last_only=True) == 12
    assert _end_position([5, 2, 6], 2, 10, last_only=True) == -1  # EOS counts only as the final token
    assert _end_position([5, 9, 6, 9], 9, 10, last_only=False) == 11
    assert _end_position([5, 6], None, 10, last_only=False) == -1
