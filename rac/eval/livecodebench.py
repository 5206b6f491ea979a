"""LiveCodeBench code generation (paper Table 2): problems, tests and prompts from the hub data set.

Reads ``livecodebench/code_generation_lite`` (one JSON-lines file per release: ``test.jsonl`` holds
release v1, ``testN.jsonl`` release vN; ``release_vN`` = all of v1..vN, ``vN`` = only vN) at a pinned
``revision``, or a local file in the same format. Each row becomes a record :mod:`rac.eval.code`
grades: LeetCode rows (``testtype: functional``, a ``class Solution`` method named by
``metadata.func_name``) become ``tests.functional`` code; AtCoder / Codeforces rows (``stdin``)
become ``tests.stdio`` input/output pairs. Public *and* private tests are used, as in the official
harness. Private tests are stored either as a JSON string or as base64(zlib(pickle(JSON string)));
the pickle is read with an unpickler that refuses every global, so a hostile data file cannot run
code when loaded (only a plain string unpickles). The prompt is LiveCodeBench's own code-generation
instruction (starter code -> complete it; none -> read stdin, write stdout).
"""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import re
import zlib
from typing import Any

from rac.errors import RacError

REPO = "livecodebench/code_generation_lite"
# problems per release file (test.jsonl = v1, test2.jsonl = v2, ...): release_v5 = 880, release_v6 = 1055
FILE_PROBLEMS = {1: 400, 2: 111, 3: 101, 4: 101, 5: 167, 6: 175}
_RELEASE = re.compile(r"^(release_)?v([1-9][0-9]*)$")

INSTRUCTION_STARTER = ("You will use the following starter code to write the solution to the problem and enclose "
                       "your code within delimiters.\n```python\n{starter}\n```")
INSTRUCTION_STDIN = ("Read the inputs from stdin solve the problem and write the answer to stdout (do not directly "
                     "test on the sample inputs). Enclose your code within delimiters as follows. Ensure that when "
                     "the python program runs, it reads the inputs, runs the algorithm and writes output to STDOUT."
                     "\n```python\n# YOUR CODE HERE\n```")

FUNCTIONAL_TESTS = """\
import json as _json
for _i, (_inp, _out) in enumerate({cases!r}):
    _args = [_json.loads(_line) for _line in _inp.split("\\n") if _line.strip()]
    _got = getattr(Solution(), {func!r})(*_args)
    if isinstance(_got, tuple):
        _got = list(_got)
    if _got != _json.loads(_out):
        raise AssertionError("test %d: wrong answer" % _i)
"""


class LiveCodeBenchError(RacError, ValueError):
    """A LiveCodeBench release, file or row cannot be read."""


class _StringsOnly(pickle.Unpickler):
    """Unpickler that builds no objects but the built-in scalars and containers (no globals at all)."""

    def find_class(self, module: str, name: str) -> Any:
        raise LiveCodeBenchError(f"private tests: refusing to unpickle {module}.{name}")


def release_files(release: str) -> list[str]:
    """Hub file names of a release: ``release_v3`` -> test.jsonl, test2.jsonl, test3.jsonl; ``v3`` -> test3.jsonl."""
    match = _RELEASE.match(release)
    if not match:
        raise LiveCodeBenchError(f"unknown LiveCodeBench release {release!r}; expected release_vN or vN")
    last = int(match.group(2))
    versions = range(1, last + 1) if match.group(1) else [last]
    return ["test.jsonl" if v == 1 else f"test{v}.jsonl" for v in versions]


def release_problems(release: str) -> int | None:
    """Problems in a release as published (for ``rac plan``'s estimates); None for releases not listed."""
    counts = [FILE_PROBLEMS.get(int(re.sub(r"\D", "", name) or 1)) for name in release_files(release)]
    return None if None in counts else sum(c for c in counts if c is not None)


def decode_tests(text: str) -> list[dict]:
    """Test cases from a ``public_test_cases`` / ``private_test_cases`` field (JSON, or compressed pickle)."""
    if not text:
        return []
    try:
        cases = json.loads(text)
    except json.JSONDecodeError:
        try:
            raw = zlib.decompress(base64.b64decode(text.encode("ascii"), validate=True))
            cases = _StringsOnly(io.BytesIO(raw)).load()
        except (ValueError, zlib.error, pickle.UnpicklingError, EOFError) as exc:
            raise LiveCodeBenchError(f"test cases are neither JSON nor base64/zlib/pickle: {exc}") from None
        if isinstance(cases, str):
            cases = json.loads(cases)
    if not isinstance(cases, list) or not all(isinstance(c, dict) and {"input", "output"} <= set(c) for c in cases):
        raise LiveCodeBenchError("test cases must be a list of {input, output, testtype}")
    return cases


def prompt(row: dict) -> str:
    """LiveCodeBench's code-generation prompt for one problem."""
    starter = str(row.get("starter_code") or "")
    instruction = INSTRUCTION_STARTER.format(starter=starter) if starter.strip() else INSTRUCTION_STDIN
    return f"### Question:\n{row['question_content']}\n\n### Format: {instruction}\n\n### Answer: (use the provided format with backticks)\n"


def to_record(row: dict) -> dict:
    """A record :func:`rac.eval.code.grade_code` can grade (``problem``, ``tests``, ids, metadata)."""
    missing = {"question_id", "question_content", "public_test_cases", "private_test_cases"} - set(row)
    if missing:
        raise LiveCodeBenchError(f"LiveCodeBench row lacks {', '.join(sorted(missing))}")
    cases = decode_tests(row["public_test_cases"]) + decode_tests(row["private_test_cases"])
    if not cases:
        raise LiveCodeBenchError(f"problem {row['question_id']}: no test cases")
    kinds = {c.get("testtype", "stdin") for c in cases}
    pairs = [(str(c["input"]), str(c["output"])) for c in cases]
    if kinds == {"functional"}:
        metadata = row.get("metadata") or "{}"
        func = (json.loads(metadata) if isinstance(metadata, str) else metadata).get("func_name")
        if not func:
            raise LiveCodeBenchError(f"problem {row['question_id']}: functional tests without metadata.func_name")
        tests: dict = {"functional": FUNCTIONAL_TESTS.format(cases=pairs, func=func)}
    elif kinds == {"stdin"}:
        tests = {"stdio": pairs}
    else:
        raise LiveCodeBenchError(f"problem {row['question_id']}: mixed test types {sorted(kinds)}")
    return {"task_id": str(row["question_id"]), "problem": prompt(row), "tests": tests, "n_tests": len(pairs),
            **{k: row.get(k) for k in ("question_title", "platform", "difficulty", "contest_date")}}


def _read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as handle:
        try:
            return [json.loads(line) for line in handle if line.strip()]
        except json.JSONDecodeError as exc:
            raise LiveCodeBenchError(f"{path}: line {exc.lineno}: not JSON") from None


def load_livecodebench(release: str = "release_v5", revision: str | None = None, path: str | None = None) -> list[dict]:
    """Graded records of a release (from ``path`` when given, else the hub at ``revision``)."""
    if path:
        if not os.path.isfile(path):
            raise LiveCodeBenchError(f"LiveCodeBench file not found: {path}")
        rows = _read_jsonl(path)
    else:
        from huggingface_hub import hf_hub_download

        rows = []
        for name in release_files(release):
            try:
                local = hf_hub_download(REPO, name, repo_type="dataset", revision=revision)
            except Exception as exc:  # offline, unknown revision, gated: say which file
                raise LiveCodeBenchError(f"cannot fetch {REPO}/{name} (revision {revision or 'main'}): "
                                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
            rows += _read_jsonl(local)
    return [to_record(row) for row in rows]
