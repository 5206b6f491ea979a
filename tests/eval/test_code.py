"""Code extraction and grading on bundled HumanEval / LeetCode problems."""

from __future__ import annotations

import pytest

from rac.calibration.datasets import load_records
from rac.eval.code import (
    CodeTaskError,
    build_program,
    extract_code,
    grade_code,
    problem_kind,
    reference_solution,
)


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


def _wrong(record: dict, tail: str) -> str:
    """A wrong HumanEval solution (returns None) followed by ``tail``."""
    return f"```python\ndef {record['entry_point']}(*args):\n    return None\n{tail}```"


def _right(record: dict, tail: str) -> str:
    """The canonical HumanEval solution followed by ``tail``."""
    return f"```python\n{record['prompt']}{record['canonical_solution']}\n{tail}```"


@pytest.mark.parametrize("tail", [
    'if __name__ == "__main__":\n    exit()\n',  # the old runner ran the completion as __main__: exit 0
    'if __name__ == "__main__":\n    import sys\n    sys.exit(0)\n',
    "exit(0)\n",  # at import: the tests never run
    "import atexit, os\natexit.register(lambda: os._exit(0))\n",  # turns the failing exit status into 0
    "import sys\nsys.excepthook = lambda *a: None\nimport atexit, os\natexit.register(lambda: os._exit(0))\n",
])
def test_wrong_solution_cannot_exit_its_way_to_a_pass(humaneval, tail):
    result = grade_code(humaneval, _wrong(humaneval, tail))
    assert not result.passed, result


@pytest.mark.parametrize("tail", [
    'if __name__ == "__main__":\n    print(has_close_elements(eval(input()), 0.5))\n',  # stdin is closed
    "import atexit, os\natexit.register(lambda: os._exit(3))\n",  # the runner ends before atexit handlers
    'print("some output")\n',
    'print("x" * 50000)\n',  # more than the sandbox keeps of stdout: the verdict line is not crowded out
])
def test_right_solution_with_a_main_block_passes(humaneval, tail):
    result = grade_code(humaneval, _right(humaneval, tail))
    assert result.passed, result


def test_leetcode_wrong_solution_that_exits_fails(leetcode):
    wrong = "```python\nclass Solution:\n    pass\n\nimport atexit, os\natexit.register(lambda: os._exit(0))\n```"
    assert not grade_code(leetcode, wrong).passed
    main_block = reference_solution(leetcode).replace("\n```", '\nif __name__ == "__main__":\n    input()\n```')
    assert grade_code(leetcode, main_block).passed


def test_sentinel_is_per_run_and_required(humaneval, monkeypatch):
    """Exit 0 without the sentinel (here: the solution printing a guessed one) is not a pass."""
    code_a, program_a = build_program(humaneval, reference_solution(humaneval))
    code_b, program_b = build_program(humaneval, reference_solution(humaneval))
    assert code_a == code_b and program_a != program_b  # a fresh random sentinel each time
    import rac.eval.code as code_module

    monkeypatch.setattr(code_module, "new_sentinel", lambda: "rac-tests-passed-guessed")
    guess = _wrong(humaneval, 'print("rac-tests-passed-other")\nimport os\nos._exit(0)\n')
    result = grade_code(humaneval, guess)
    assert not result.passed and result.status == "no_sentinel"
