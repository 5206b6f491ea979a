"""Per-position decode weights: tail segment, dense confidence, sum preserved, bad levers rejected."""

from __future__ import annotations

import pytest
import torch

from rac.calibration.datasets import DatasetError
from rac.calibration.mix import KIND_DECODE, KIND_PROMPT, KIND_TEXT, CalibrationSet
from rac.calibration.position import apply_position_weights, check_position, dense_confidence, tail_multipliers


def _calib(w_prompt: float = 1.0, w_decode: float = 2.0) -> CalibrationSet:
    """Two traces: 3 prompt + 6 decode tokens (a marker 7, 8 at decode index 2), 2 prompt + 2 decode."""
    ids = [1, 2, 3, 10, 11, 7, 8, 12, 13] + [4, 5, 14, 15]
    kinds = [KIND_PROMPT] * 3 + [KIND_DECODE] * 6 + [KIND_PROMPT] * 2 + [KIND_DECODE] * 2
    weights = [w_prompt if k == KIND_PROMPT else w_decode for k in kinds]
    return CalibrationSet(torch.tensor(ids, dtype=torch.int32), torch.tensor([0, 9, 13]),
                          torch.tensor(weights, dtype=torch.float32), torch.tensor(kinds, dtype=torch.int8), {})


def test_tail_covers_the_last_tokens_and_the_answer_segment() -> None:
    calib = _calib()
    assert tail_multipliers(calib, 2, 5.0).tolist() == [1, 1, 1, 1, 1, 1, 1, 5, 5, 1, 1, 5, 5]
    # from the marker [7, 8] on, even beyond tail_tokens
    assert tail_multipliers(calib, 1, 5.0, [7, 8]).tolist() == [1, 1, 1, 1, 1, 5, 5, 5, 5, 1, 1, 1, 5]
    assert tail_multipliers(calib, 0, 5.0, [99]).tolist() == [1.0] * 13


def test_apply_tail_keeps_the_decode_sum_and_prompt_weights() -> None:
    calib = _calib()
    decode = calib.token_kind == KIND_DECODE
    before = float(calib.token_weight[decode].sum())
    stats = apply_position_weights(calib, {"kind": "tail", "factor": 3.0, "tail_tokens": 2, "marker": None})
    w = calib.token_weight
    assert float(w[decode].sum()) == pytest.approx(before)
    assert w[~decode].tolist() == [1.0] * 5  # prompt tokens untouched
    assert w[7] == pytest.approx(3 * w[3]) and w[12] == pytest.approx(3 * w[10]) and w[3] < 2.0
    assert stats["weighted_tokens"] == 4 and calib.stats["position_weights"]["kind"] == "tail"


def test_uniform_changes_nothing() -> None:
    calib = _calib()
    apply_position_weights(calib, {"kind": "uniform", "factor": 4.0, "tail_tokens": 64, "marker": None})
    assert calib.token_weight.tolist() == _calib().token_weight.tolist()


def test_confidence_weights_follow_the_dense_models_top_probability(tiny_llama) -> None:
    model, _ = tiny_llama
    calib = _calib()
    conf = dense_confidence(model, calib)
    with torch.no_grad():
        direct = torch.softmax(model(calib.input_ids[:9].long()[None]).logits[0].float(), -1).amax(-1)
    assert torch.allclose(conf[:9], direct, atol=1e-5)
    decode = calib.token_kind == KIND_DECODE
    apply_position_weights(calib, {"kind": "confidence", "factor": 2.0, "tail_tokens": 64, "marker": None}, model=model)
    expected = 2.0 * (1 + 2.0 * conf[decode])
    expected *= 2.0 * int(decode.sum()) / float(expected.sum())
    assert torch.allclose(calib.token_weight[decode], expected, atol=1e-5)
    with pytest.raises(DatasetError, match="needs the dense model"):
        apply_position_weights(_calib(), {"kind": "confidence", "factor": 2.0, "tail_tokens": 1, "marker": None})


def test_levers_that_cannot_act_are_errors() -> None:
    with pytest.raises(DatasetError, match="kind 'prompt' has none"):
        check_position({"kind": "tail"}, "prompt")
    with pytest.raises(DatasetError, match="factor: must be >= 0"):
        check_position({"kind": "tail", "factor": -1}, "rac")
    with pytest.raises(DatasetError, match="not one of"):
        check_position({"kind": "middle"}, "rac")
    check_position({"kind": "confidence", "factor": -1}, "rac")
    check_position({"kind": "uniform"}, "text")
    assert KIND_TEXT != KIND_DECODE
