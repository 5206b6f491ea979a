"""Right-padded replay batches, and replay == generation-time activations."""

from __future__ import annotations

import pytest
import torch

from rac.calibration.mix import KIND_PROMPT, CalibrationSet, _Builder
from rac.calibration.replay import PAD_KIND, iter_batches


def make_set(lengths, w_prompt=1.0, w_decode=1.0) -> CalibrationSet:
    builder = _Builder(w_prompt, w_decode)
    for n, length in enumerate(lengths):
        prompt = list(range(1, 1 + length // 2))
        builder.add(prompt, KIND_PROMPT, [100 + n] * (length - len(prompt)))
    return builder.build({})


def test_batches_are_right_padded_and_pads_never_weighted():
    calib = make_set([5, 9, 3, 7, 2], w_prompt=0.5, w_decode=3.0)
    seen = []
    for batch in iter_batches(calib, batch_size=2):
        assert batch.input_ids.shape == batch.attention_mask.shape == batch.token_weight.shape
        for row, index in enumerate(batch.indices):
            n = calib.lengths()[index]
            ids, weight, kind = calib.sequence(index)
            assert batch.attention_mask[row].tolist() == [1] * n + [0] * (batch.input_ids.shape[1] - n)
            assert batch.input_ids[row, :n].tolist() == ids.tolist()
            assert torch.equal(batch.token_weight[row, :n], weight)
            assert torch.equal(batch.token_kind[row, :n], kind)
            assert bool((batch.token_weight[row, n:] == 0).all()) and bool((batch.token_kind[row, n:] == PAD_KIND).all())
            seen.append(index)
        assert float(batch.token_weight[batch.attention_mask == 0].abs().sum()) == 0.0
    assert sorted(seen) == list(range(5))
    total = sum(float(b.token_weight.sum()) for b in iter_batches(calib, batch_size=3))
    assert total == pytest.approx(float(calib.token_weight.sum()))


def test_max_tokens_caps_padded_batch_size():
    calib = make_set([10, 10, 10, 4, 4, 4, 4, 30])
    batches = list(iter_batches(calib, batch_size=8, max_tokens=20))
    assert sorted(i for b in batches for i in b.indices) == list(range(8))
    for batch in batches:
        assert batch.input_ids.numel() <= 20 or len(batch.indices) == 1
    assert [b.indices for b in batches] == [[7], [0, 1], [2, 3], [4, 5, 6]]  # longest first, then fill
    with pytest.raises(ValueError, match="batch_size"):
        next(iter_batches(calib, batch_size=0))


def test_replay_matches_hidden_states_recorded_during_generate(tiny_model):
    """Teacher-forced replay of [prompt + completion] == activations seen while decoding."""
    model, tok = tiny_model
    prompts = [tok("The quick brown fox jumps")["input_ids"], tok("Hi")["input_ids"]]
    width = max(map(len, prompts))
    ids = torch.full((2, width), tok.pad_token_id)
    mask = torch.zeros((2, width), dtype=torch.long)
    for row, p in enumerate(prompts):  # left padded, as the hf engine does
        ids[row, width - len(p):] = torch.tensor(p)
        mask[row, width - len(p):] = 1
    new_tokens = 6
    with torch.inference_mode():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                             do_sample=False, output_hidden_states=True, return_dict_in_generate=True,
                             pad_token_id=tok.pad_token_id)
    builder = _Builder(1.0, 1.0)
    for row, p in enumerate(prompts):
        builder.add(p, KIND_PROMPT, out.sequences[row, width:].tolist())
    calib = builder.build({})
    layers = model.config.num_hidden_layers + 1
    for batch in iter_batches(calib, batch_size=2):
        with torch.inference_mode():
            replay = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        for row, index in enumerate(batch.indices):
            n_prompt = len(prompts[index])
            for layer in range(layers):
                # generation step 0 covers the prompt; step k >= 1 the k-th generated token (fed back as input)
                recorded = [out.hidden_states[0][layer][index, width - n_prompt:]]
                recorded += [out.hidden_states[k][layer][index] for k in range(1, new_tokens)]
                recorded = torch.cat(recorded)
                replayed = replay.hidden_states[layer][row, : n_prompt + new_tokens - 1]
                torch.testing.assert_close(replayed, recorded, atol=1e-4, rtol=1e-4)
