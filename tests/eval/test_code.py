"""Code extraction and grading on bundled HumanEval / LeetCode problems."""

from __future__ import annotations

import pytest

from rac.calibration.datasets import load_records
from rac.eval.code import CodeTaskError, extract_code, grade_code, problem_kind, reference_solution


@pytest.fixture(scope="module")
def humaneval():
    return load_records({"dataset": "humaneval"})[0]


@pytest.fixture(scope="module")
def leetcode():
    return load_records({"dataset": "leetcode"})[0]


def test_extract_code_prefers_last_python_block():
    text = "Idea:\n```\npseudo\n```\nCode:\n```python\ndef f():\n    return 1\n```\nDone."
    assert extract_code(text) == "def f():\n    return 1\n"
    assert extract_code("def g(): pass") == "def g(): pass"


def test_humaneval_canonical_passes_and_wrong_fails(humaneval):
    assert grade_code(humaneval, reference_solution(humaneval)).passed
    wrong = f"```python\ndef {humaneval['entry_point']}(*args):\n    return None\n```"
    result = grade_code(humaneval, wrong)
    assert not result.passed and result.status == "error"


def test_leetcode_reference_passes_and_wrong_fails(leetcode):
    assert problem_kind(leetcode) == "leetcode"
    assert grade_code(leetcode, reference_solution(leetcode)).passed
    assert not grade_code(leetcode, "```python\nclass Solution:\n    pass\n```").passed


def test_unknown_record_shape():
    with pytest.raises(CodeTaskError, match="fields"):
        problem_kind({"question": "x"})
