"""Answer extraction, math-verify grading, SE and pass@k."""

from __future__ import annotations

import math

import pytest

from rac.eval.math import extract_answer, grade, last_boxed, pass_at_k, standard_error, summarize


@pytest.mark.parametrize(
    ("prediction", "reference", "correct"),
    [
        (r"so the answer is $\boxed{\frac{1}{2}}$", r"\frac{1}{2}", True),
        (r"\boxed{0.5}", r"\frac{1}{2}", True),
        (r"\boxed{\frac{3}{4}}", "0.75", True),
        (r"\boxed{\frac{2}{3}}", r"\frac{1}{2}", False),
        (r"\boxed{\left( 3, \frac{\pi}{2} \right)}", r"\left( 3, \frac{\pi}{2} \right)", True),
        ("She pays $1,234 in total.\n#### 1,234", "Some work <<a=b>>\n#### 1234", True),
        ("The answer is $18.", "Janet sells ... \n#### 18", True),
        ("5 apples then 7 more: 12", "#### 12", True),
        ("5 apples then 7 more: 13", "#### 12", False),
        (r"\boxed{\text{(C)}}", "C", True),
        ("no numbers here", "#### 3", False),
    ],
)
def test_grade_known_pairs(prediction, reference, correct):
    assert grade(prediction, reference).correct is correct


def test_nested_boxed_takes_the_last_and_balances_braces():
    text = r"first \boxed{1} then \boxed{\frac{\sqrt{2}}{2}} done"
    assert last_boxed(text) == r"\frac{\sqrt{2}}{2}"
    assert grade(text, r"\frac{\sqrt{2}}{2}").correct


def test_extraction_rules():
    assert extract_answer("It costs $1,200.50 total") == "1200.50"
    assert extract_answer("blah\n#### 72") == "72"
    assert extract_answer("x = 3/4") == "3/4"
    assert grade("x = 3/4", r"\frac{3}{4}").correct
    assert grade("", "1") == grade("nothing", "1")


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
    assert m["truncated_fraction"] == 0.5
    assert m["tokens_per_second"] == 50
