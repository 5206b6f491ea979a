"""Answer extraction, math-verify grading, SE and pass@k."""

from __future__ import annotations

import importlib.util
import math
import threading

import pytest

from rac.eval.math import (
    DATASET_EXTRACT,
    AnswerSpec,
    AnswerSpecError,
    extract_answer,
    grade,
    grading_counts,
    last_boxed,
    pass_at_k,
    resolve_spec,
    standard_error,
    summarize,
)
from rac.eval.verify import Verifier, VerifyTimeout
from rac.recipe.schema import recipe_schema

GSM8K = AnswerSpec(extract=("gsm8k", "boxed"))
LENIENT = AnswerSpec(extract=("boxed", "gsm8k", "answer_is", "last_number"))
REASONING = AnswerSpec(after="</think>", extract=("gsm8k", "boxed"))
# pairs that string / integer comparison cannot settle go to math-verify (the eval extra)
needs_math_verify = pytest.mark.skipif(importlib.util.find_spec("math_verify") is None,
                                       reason="needs the eval extra: pip install 'rac[eval]' (math-verify)")


@pytest.mark.parametrize(
    ("prediction", "reference", "spec", "correct"),
    [
        (r"so the answer is $\boxed{\frac{1}{2}}$", r"\frac{1}{2}", None, True),
        pytest.param(r"\boxed{0.5}", r"\frac{1}{2}", None, True, marks=needs_math_verify),
        pytest.param(r"\boxed{\frac{3}{4}}", "0.75", None, True, marks=needs_math_verify),
        pytest.param(r"\boxed{\frac{2}{3}}", r"\frac{1}{2}", None, False, marks=needs_math_verify),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", None, True),
        ("She pays $1,234 in total.\n#### 1,234", "Some work <<a=b>>\n#### 1234", GSM8K, True),
        ("The answer is $18.", "Janet sells ... \n#### 18", LENIENT, True),
        ("The answer is $18.", "Janet sells ... \n#### 18", GSM8K, False),  # no `####`, no box
        ("5 apples then 7 more: 12", "#### 12", LENIENT, True),
        ("5 apples then 7 more: 12", "#### 12", GSM8K, False),  # no last-number fallback unless asked
        ("5 apples then 7 more: 13", "#### 12", LENIENT, False),
        pytest.param(r"\boxed{\text{(C)}}", "C", None, True, marks=needs_math_verify),
        ("no numbers here", "#### 3", LENIENT, False),
        ("<think>maybe \\boxed{3}? no.</think>The total is \\boxed{4}.", "#### 4", REASONING, True),
        ("<think>so \\boxed{4}</think>I give up.", "#### 4", REASONING, False),  # only after the marker
        pytest.param("x = 3/4", r"\frac{3}{4}", LENIENT, True, marks=needs_math_verify),
    ],
)
def test_grade_known_pairs(prediction, reference, spec, correct):
    assert grade(prediction, reference, spec).correct is correct


def test_truncated_trace_whose_last_number_is_the_answer_is_wrong():
    """A reasoning trace cut by the token budget: its last intermediate number equals the answer."""
    trace = "<think>\nShe has 3 boxes of 6 eggs, so 3 * 6 = 18 eggs. Wait, she also eats 3, so 18"
    assert grade(trace, "#### 18", LENIENT).correct  # the old rule: the last number in the text
    result = grade(trace, "#### 18", resolve_spec({}, "gsm8k_test", vocabulary={"</think>"}))
    assert not result.correct and result.status == "no_marker"
    assert not grade(trace, "#### 18", resolve_spec({"after": None}, "gsm8k_test")).correct
    finished = trace + " eggs.\n</think>\n#### 18"
    assert grade(finished, "#### 18", resolve_spec({}, "gsm8k_test", vocabulary={"</think>"})).correct


def test_on_missing_whole_text_searches_the_whole_completion():
    spec = AnswerSpec(after="</think>", extract=("boxed",), on_missing="whole_text")
    assert grade("no marker but \\boxed{7}", "7", spec).correct
    assert grade("no marker but \\boxed{7}", "7", AnswerSpec(after="</think>")).status == "no_marker"


def test_nested_boxed_takes_the_last_and_balances_braces():
    text = r"first \boxed{1} then \boxed{\frac{\sqrt{2}}{2}} done"
    assert last_boxed(text) == r"\frac{\sqrt{2}}{2}"
    assert grade(text, r"\frac{\sqrt{2}}{2}").correct


def test_extraction_rules():
    assert extract_answer("It costs $1,200.50 total", LENIENT) == "1200.50"
    assert extract_answer("It costs $1,200.50 total", GSM8K) is None
    assert extract_answer("blah\n#### 72", GSM8K) == "72"
    assert extract_answer("x = 3/4", LENIENT) == "3/4"
    assert extract_answer("the answer is $\\frac{1}{2}$.", AnswerSpec(extract=("answer_is",))) == "\\frac{1}{2}"
    assert grade("", "1") == grade("nothing", "1")
    assert grade("", "1").status == "no_answer"


def test_resolve_spec_auto_marker_and_dataset_defaults():
    assert resolve_spec({}, "gsm8k_test").extract == ("gsm8k", "boxed")
    assert resolve_spec({}, "math500").extract == ("boxed",)
    assert resolve_spec({}, None).extract == ("boxed",)
    assert resolve_spec({"extract": ["last_number"]}, "math500").extract == ("last_number",)
    assert resolve_spec({}, "math500", vocabulary={"</think>", "a"}).after == "</think>"
    assert resolve_spec({}, "math500", vocabulary={"a"}).after is None  # not a reasoning model
    assert resolve_spec({"after": "ANSWER:"}, None).after == "ANSWER:"
    # reasoning switched off in the prompt (e.g. a "<think>\n\n</think>\n\n" prefix): all answer
    off = resolve_spec({}, None, vocabulary={"</think>"}, prompt="<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert off.after is None
    with pytest.raises(AnswerSpecError, match="special token"):
        resolve_spec({"after": "<|im_end|>"}, None, stripped={"<|im_end|>"})
    with pytest.raises(AnswerSpecError, match="extract"):
        AnswerSpec(extract=("first_number",))
    with pytest.raises(AnswerSpecError, match="on_missing"):
        AnswerSpec(on_missing="skip")


def test_schema_documents_the_dataset_defaults():
    task = recipe_schema()["$defs"]["task_math"]["properties"]["answer"]
    text = task["properties"]["extract"]["description"]
    for dataset, methods in DATASET_EXTRACT.items():
        assert f"{dataset}: [{', '.join(methods)}]" in text
    assert task["default"]["after"] == "auto" and task["properties"]["on_missing"]["default"] == "wrong"
    assert task["properties"]["extract"]["items"]["enum"] == ["boxed", "gsm8k", "answer_is", "last_number"]


PAIRS = [(r"\boxed{\frac12}", "0.5"), (r"\boxed{0.5}", r"\frac{1}{2}"), (r"\boxed{\frac{3}{4}}", "0.75"),
         (r"\boxed{\sqrt{8}}", r"2\sqrt{2}"), (r"\boxed{\frac{2}{3}}", r"\frac{1}{2}")]


@needs_math_verify
def test_grading_from_a_thread_equals_grading_on_the_main_thread():
    """math_verify's own timeout uses SIGALRM: from a thread it used to return False silently."""
    main = [grade(p, r).correct for p, r in PAIRS]
    assert main == [True, True, True, True, False]
    threaded: list[bool] = []
    worker = threading.Thread(target=lambda: threaded.extend(grade(p, r).correct for p, r in PAIRS))
    worker.start()
    worker.join()
    assert threaded == main


@needs_math_verify
def test_verifier_times_out_closed_and_recovers():
    verifier = Verifier(timeout_s=0.0)
    try:
        with pytest.raises(VerifyTimeout):
            verifier.equivalent(r"\frac{1}{2}", "0.5")
        verifier.timeout_s = 60.0
        assert verifier.equivalent(r"\frac{1}{2}", "0.5")  # a fresh helper process
    finally:
        verifier.close()


def test_grading_timeout_is_scored_wrong_and_counted(monkeypatch):
    import rac.eval.math as math_module

    def slow(gold: str, predicted: str) -> bool:
        raise VerifyTimeout("too slow")

    monkeypatch.setattr(math_module, "equivalent", slow)
    result = grade(r"\boxed{0.5}", r"\frac{1}{2}")
    assert not result.correct and result.status == "timeout"
    assert grading_counts([{"status": "timeout"}, {"status": "no_marker"}, {"status": "no_answer"},
                           {"status": "graded"}]) == {"no_answer": 2, "grading_timeouts": 1}


def test_grade_without_reference_is_an_error():
    with pytest.raises(ValueError, match="reference"):
        grade("1", None)


def test_standard_error_is_binomial_for_one_sample():
    acc = [1.0] * 30 + [0.0] * 70
    assert standard_error(acc) == pytest.approx(math.sqrt(0.3 * 0.7 / 100))
    assert standard_error([]) == 0.0


def test_pass_at_k_unbiased_estimator():
    assert pass_at_k(10, 0, 1) == 0.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(10, 3, 2) == pytest.approx(1 - math.comb(7, 2) / math.comb(10, 2))
    assert pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 3, 1)


def test_summarize_metrics():
    records = [
        {"id": "a", "correct": True, "length": 10, "finish_reason": "stop"},
        {"id": "a", "correct": False, "length": 20, "finish_reason": "length"},
        {"id": "b", "correct": False, "length": 30, "finish_reason": "stop"},
        {"id": "b", "correct": False, "length": 40, "finish_reason": "length"},
    ]
    m = summarize(records, wall_seconds=2.0, max_new_tokens=40)
    assert m["n_problems"] == 2 and m["samples"] == 2
    assert m["accuracy"] == pytest.approx(0.25)
    assert m["pass_at_k"]["1"] == pytest.approx(0.25)
    assert m["pass_at_k"]["2"] == pytest.approx(0.5)
    assert m["accuracy_se"] == pytest.approx(math.sqrt(((0.5 - 0.25) ** 2 + 0.25**2) / 2 / 2))
    assert m["mean_length"] == 25 and m["median_length"] == 25
    assert m["truncated_fraction"] == 0.5 and m["truncated"] == 2
    assert m["accuracy_excluding_truncated"] == pytest.approx(0.5)  # a (correct) and b (wrong) finished
    assert summarize(records[1::2], 1.0, 40)["accuracy_excluding_truncated"] is None  # all cut
    assert m["tokens_per_second"] == 50
