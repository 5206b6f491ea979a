"""Code generation grading: HumanEval (``check(candidate)``), LeetCode functional tests and stdin/stdout tests.

A completion is graded by a trusted runner program run inside :func:`rac.eval.sandbox.run_python`.
The runner imports the solution (a prelude of standard imports -- LeetCode solutions use ``List``,
``defaultdict``, ...; 4 of the 200 bundled problems need ``from string import *`` -- plus the code
block extracted from the completion) as a module named ``solution``, not as ``__main__``, so its
``if __name__ == "__main__":`` block (``exit()``, ``input()``, demo prints) does not run; then it
runs the problem's tests in a namespace holding the solution's names. Only when the tests returned
does it print a per-run random sentinel, on a copy of stdout taken before the solution ran (the
solution's own stdout goes to /dev/null; tracebacks stay on stderr), and end
the process at once (``os._exit(0)``, so no ``atexit`` handler of the solution runs). A sample
passes only on exit status 0 *and* that sentinel line: ``exit(0)`` in the solution, an ``atexit``
handler calling ``os._exit(0)`` or a swallowed failure cannot pass a wrong solution. (This is about
verdict integrity, not security: code that reads the runner's own memory could find the sentinel;
the sandbox is the security boundary.) Standard-input programs (``tests.stdio``: LiveCodeBench's
AtCoder / Codeforces problems) are not imported: the tests run the code once per case as
``__main__`` with that case's input on ``sys.stdin`` and compare its stdout line by line, token by
token (numbers within 1e-6, as LiveCodeBench does). pass@1 / pass@k come from
:func:`rac.eval.math.summarize`.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from rac.errors import RacError
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


class CodeTaskError(RacError, ValueError):
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
    """"humaneval" (prompt/test/entry_point), "leetcode" (tests.functional) or "stdio" (tests.stdio)."""
    if {"test", "entry_point"} <= set(record):
        return "humaneval"
    tests = record.get("tests")
    if isinstance(tests, dict) and isinstance(tests.get("functional"), str):
        return "leetcode"
    if isinstance(tests, dict) and isinstance(tests.get("stdio"), list) and tests["stdio"]:
        return "stdio"
    raise CodeTaskError(
        f"code problem has neither HumanEval fields (test, entry_point), LeetCode tests.functional nor "
        f"tests.stdio; fields: {', '.join(sorted(record))}"
    )


STDIO_TESTS = """\
import io as _io, sys as _sys
def _same(_got, _want):
    _g, _w = _got.strip().splitlines(), _want.strip().splitlines()
    if len(_g) != len(_w):
        return False
    for _gl, _wl in zip(_g, _w):
        _gt, _wt = _gl.split(), _wl.split()
        if _gt == _wt:
            continue
        if len(_gt) != len(_wt):
            return False
        try:
            if any(abs(float(_a) - float(_b)) > 1e-6 for _a, _b in zip(_gt, _wt)):
                return False
        except ValueError:
            return False
    return True
_code = compile({code!r}, "solution.py", "exec")
for _i, (_inp, _want) in enumerate({cases!r}):
    _saved = _sys.stdin, _sys.stdout
    _sys.stdin = _io.TextIOWrapper(_io.BytesIO(_inp.encode()), encoding="utf-8")
    _sys.stdout = _io.StringIO()
    try:
        exec(_code, {{"__name__": "__main__"}})
    except SystemExit:
        pass
    finally:
        _got, (_sys.stdin, _sys.stdout) = _sys.stdout.getvalue(), _saved
    if not _same(_got, _want):
        raise AssertionError("test %d: wrong output" % _i)
"""


RUNNER = """\
import os as _os, sys as _sys, traceback as _traceback, types as _types
_out = _os.dup(1)
_os.dup2(_os.open(_os.devnull, _os.O_WRONLY), 1)  # the solution's prints never reach (or crowd out) the verdict
def _finish(_token={sentinel!r}, _write=_os.write, _exit=_os._exit, _out=_out):
    try:
        _sys.stdout.flush()
        _sys.stderr.flush()
    except BaseException:
        pass
    _write(_out, ("\\n" + _token + "\\n").encode())
    _exit(0)
def _fail(_exit=_os._exit, _traceback=_traceback):
    try:
        _traceback.print_exc()
        _sys.stdout.flush()
        _sys.stderr.flush()
    except BaseException:
        pass
    _exit(1)
try:  # the sentinel is in this file: take it away from the solution
    _os.remove(globals().get("__file__") or "")
except OSError:
    pass
_solution = _types.ModuleType("solution")
_solution.__file__ = "solution.py"
_sys.modules["solution"] = _solution
try:
    exec(compile({source!r}, "solution.py", "exec"), _solution.__dict__)
    _tests = dict(_solution.__dict__, __name__="rac_tests", __file__="tests.py")
    exec(compile({tests!r}, "tests.py", "exec"), _tests)
except BaseException:
    _fail()
_finish()
"""


def build_program(record: dict, completion: str, sentinel: str | None = None) -> tuple[str, str]:
    """(extracted code, runner program) for one completion of ``record``; ``sentinel`` is printed by
    the runner after the tests passed (a fresh random one when None)."""
    kind = problem_kind(record)
    code = extract_code(completion)
    if kind == "leetcode":
        source, tests = f"{LEETCODE_PRELUDE}\n{code}\n", f"{record['tests']['functional']}\n"
    elif kind == "stdio":  # a script: run per test case, not at import
        cases = [(str(i), str(o)) for i, o in record["tests"]["stdio"]]
        source, tests = "", STDIO_TESTS.format(code=f"{LEETCODE_PRELUDE}\n{code}\n", cases=cases)
    else:
        entry = record["entry_point"]
        if not re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.MULTILINE):
            # the completion continues the prompt's function body
            code = record.get("prompt", "") + completion
        source, tests = f"{HUMANEVAL_PRELUDE}\n{code}\n", f"{record['test']}\n\ncheck({entry})\n"
    sentinel = sentinel or new_sentinel()
    return code, RUNNER.format(sentinel=sentinel, source=source, tests=tests)


def new_sentinel() -> str:
    """A per-run random token that only the runner knows."""
    return f"rac-tests-passed-{secrets.token_hex(16)}"


def grade_code(record: dict, completion: str, limits: SandboxLimits | None = None) -> CodeResult:
    """Run ``completion`` against the record's tests in the sandbox; passed = exit 0 + sentinel."""
    sentinel = new_sentinel()
    code, program = build_program(record, completion, sentinel)
    result = run_python(program, limits)
    sentinel_seen = sentinel in result.stdout.splitlines()
    passed = result.ok and sentinel_seen
    status = "no_sentinel" if result.ok and not sentinel_seen else result.status
    error = "" if passed else (result.stderr.strip().splitlines() or [status])[-1][:300]
    return CodeResult(code, passed, status, error)


def reference_solution(record: dict) -> str:
    """The record's own solution as a completion (used to self-check the test harness)."""
    kind = problem_kind(record)
    if kind == "humaneval":
        return record["prompt"] + record["canonical_solution"]
    solutions = record.get("solutions") or []
    solution = solutions if isinstance(solutions, str) else (solutions[0] if solutions else "")
    if not solution:
        raise CodeTaskError(f"{kind} record has no `solutions`")
    return f"```python\n{solution}\n```"
