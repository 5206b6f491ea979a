"""Code generation grading: HumanEval (``check(candidate)``) and LeetCode functional tests.

The program run for a completion is: a prelude of standard imports (LeetCode solutions use
``List``, ``defaultdict``, ...; 4 of the 200 bundled problems need ``from string import *``), the
code block extracted from the completion, then the problem's tests. It runs only inside
:func:`rac.eval.sandbox.run_python`; a sample passes when the program exits with status 0.
pass@1 / pass@k come from :func:`rac.eval.math.summarize` (LiveCodeBench-style).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rac.eval.sandbox import SandboxLimits, run_python

LEETCODE_PRELUDE = """\
from typing import *
from collections import *
from functools import *
from itertools import *
from heapq import *
from bisect import *
from string import *
from math import *
import math, re, string, heapq, bisect, collections, functools, itertools, operator, random, sys
sys.setrecursionlimit(100000)
"""

HUMANEVAL_PRELUDE = "from typing import *\nimport math\n"

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


class CodeTaskError(ValueError):
    """A code problem record lacks the fields needed to test it."""


@dataclass(frozen=True)
class CodeResult:
    """Extracted code, whether the tests passed, and the sandbox status ("ok", "error", ...)."""

    extracted: str
    passed: bool
    status: str
    error: str = ""


def extract_code(completion: str) -> str:
    """The last fenced code block (python-tagged blocks preferred); the raw text when unfenced."""
    blocks = [(lang.lower(), body) for lang, body in _FENCE.findall(completion)]
    python = [body for lang, body in blocks if lang in ("python", "py", "python3")]
    candidates = python or [body for _, body in blocks]
    candidates = [c for c in candidates if c.strip()]
    if candidates:
        with_def = [c for c in candidates if re.search(r"^\s*(def|class)\s", c, re.MULTILINE)]
        return (with_def or candidates)[-1].rstrip() + "\n"
    return completion


def problem_kind(record: dict) -> str:
    """"humaneval" (prompt/test/entry_point) or "leetcode" (tests.functional)."""
    if {"test", "entry_point"} <= set(record):
        return "humaneval"
    tests = record.get("tests")
    if isinstance(tests, dict) and isinstance(tests.get("functional"), str):
        return "leetcode"
    raise CodeTaskError(
        f"code problem has neither HumanEval fields (test, entry_point) nor LeetCode tests.functional; "
        f"fields: {', '.join(sorted(record))}"
    )


def build_program(record: dict, completion: str) -> tuple[str, str]:
    """(extracted code, full test program) for one completion of ``record``."""
    kind = problem_kind(record)
    code = extract_code(completion)
    if kind == "leetcode":
        return code, f"{LEETCODE_PRELUDE}\n{code}\n\n{record['tests']['functional']}\n"
    entry = record["entry_point"]
    if not re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
        # the completion continues the prompt's function body
        code = record.get("prompt", "") + completion
    return code, f"{HUMANEVAL_PRELUDE}\n{code}\n\n{record['test']}\n\ncheck({entry})\n"


def grade_code(record: dict, completion: str, limits: SandboxLimits | None = None) -> CodeResult:
    """Run ``completion`` against the record's tests in the sandbox."""
    code, program = build_program(record, completion)
    result = run_python(program, limits)
    error = "" if result.ok else (result.stderr.strip().splitlines() or [result.status])[-1][:300]
    return CodeResult(code, result.ok, result.status, error)


def reference_solution(record: dict) -> str:
    """The record's own solution as a completion (used to self-check the test harness)."""
    if problem_kind(record) == "humaneval":
        return record["prompt"] + record["canonical_solution"]
    solutions = record.get("solutions") or []
    solution = solutions if isinstance(solutions, str) else (solutions[0] if solutions else "")
    if not solution:
        raise CodeTaskError("leetcode record has no `solutions`")
    return f"```python\n{solution}\n```"
