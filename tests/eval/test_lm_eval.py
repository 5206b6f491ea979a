"""lm-eval wrapper: metric parsing, the offline skip (no hub access in tests) and a missing eval extra."""

from __future__ import annotations

import pytest

from rac.eval import lm_eval as wrapper


def test_task_metrics_and_primary():
    results = {"results": {"arc_easy": {"alias": "arc_easy", "acc,none": 0.5, "acc_stderr,none": 0.1,
                                        "acc_norm,none": 0.6, "acc_norm_stderr,none": 0.1}}}
    metrics = wrapper._task_metrics(results, "arc_easy")
    assert metrics == {"acc": 0.5, "acc_stderr": 0.1, "acc_norm": 0.6, "acc_norm_stderr": 0.1}
    assert wrapper.primary_metric(metrics) == ("acc", 0.5, 0.1)
    assert wrapper.primary_metric({"bleu": 3.0}) == ("bleu", 3.0, None)


def test_offline_detection_follows_the_cause_chain():
    try:
        try:
            raise RuntimeError("OfflineModeIsEnabled: cannot reach the hub")
        except RuntimeError as inner:
            raise KeyError("dataset") from inner
    except KeyError as outer:
        assert wrapper._is_offline_failure(outer)
    assert not wrapper._is_offline_failure(ZeroDivisionError("bug"))


NEEDS_EVAL = "needs the eval extra: pip install 'rac[eval]'"


def test_missing_harness_is_a_skipped_task_naming_the_extra(monkeypatch, tiny_llama):
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # as on a machine without the eval extra
    result = wrapper.run_lm_eval(*tiny_llama, "arc_easy", limit=2)
    assert result["status"] == "skipped" and "lm-eval is not installed" in result["reason"]
    assert "rac[eval]" in result["reason"]


def test_offline_task_is_skipped_with_reason(monkeypatch, tiny_llama):
    lm_eval = pytest.importorskip("lm_eval", reason=NEEDS_EVAL)
    import lm_eval.models.huggingface as hf

    model, tok = tiny_llama
    monkeypatch.setattr(wrapper, "known_task", lambda task: True)
    monkeypatch.setattr(wrapper, "task_manager", lambda: None)
    monkeypatch.setattr(hf, "HFLM", lambda **kwargs: object())

    def offline(**kwargs):
        raise ConnectionError("Couldn't reach 'allenai/ai2_arc' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(lm_eval, "simple_evaluate", offline)
    result = wrapper.run_lm_eval(model, tok, "arc_easy", limit=2)
    assert result["status"] == "skipped" and "offline" in result["reason"]


def test_unknown_task_is_a_clear_error(monkeypatch, tiny_llama):
    pytest.importorskip("lm_eval", reason=NEEDS_EVAL)
    monkeypatch.setattr(wrapper, "known_task", lambda task: False)
    with pytest.raises(wrapper.LMEvalTaskError, match="no_such_task"):
        wrapper.run_lm_eval(*tiny_llama, "no_such_task")


@pytest.mark.slow
def test_real_harness_offline_skip(tiny_llama, monkeypatch):
    pytest.importorskip("lm_eval", reason=NEEDS_EVAL)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    result = wrapper.run_lm_eval(*tiny_llama, "arc_easy", limit=2)
    if result["status"] == "ok":  # the task data is in the local HF cache: real scores for 2 questions
        assert result["limit"] == 2 and 0.0 <= result["accuracy"] <= 1.0 and result["primary_metric"] in result["metrics"]
    else:  # otherwise the real harness's offline failure must be recognised, with the cause in the reason
        assert result["status"] == "skipped" and "offline" in result["reason"], result
