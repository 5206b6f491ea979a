"""LiveCodeBench (paper Table 2) offline: the bundled sample in the hub's row format is loaded,
its public + private tests decoded, and solutions graded in the sandbox; pass@1 over samples and
its standard error come out of the evaluate stage's summary."""

from __future__ import annotations

import base64
import json
import pickle
import zlib
from pathlib import Path

import pytest

from rac.eval.code import grade_code, problem_kind
from rac.eval.livecodebench import LiveCodeBenchError, decode_tests, load_livecodebench, release_files, to_record
from rac.eval.math import summarize
from rac.eval.sandbox import SandboxLimits

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "livecodebench" / "sample.jsonl"
LIMITS = SandboxLimits(timeout_s=20, mode="unsafe-local")

RIGHT = {
    "abc900_a": "```python\na, b = map(int, input().split())\nprint(a + b)\n```",
    "1990A": "```python\nimport sys\ndata = sys.stdin.read().split()\nn = int(data[0])\n"
             "print(sum(map(int, data[1:n + 1])) / n)\n```",
    "3900": "```python\nclass Solution:\n    def addTwo(self, a: int, b: int) -> int:\n        return a + b\n```",
    "3901": "```python\nclass Solution:\n    def sortedSquares(self, nums: List[int]) -> List[int]:\n"
            "        return sorted(x * x for x in nums)\n```",
}
# each passes the public test only, so a grader that skipped the private tests would pass it
PUBLIC_ONLY = {
    "abc900_a": "```python\ninput()\nprint(3)\n```",
    "1990A": "```python\nprint('2.3333333333')\n```",
    "3900": "```python\nclass Solution:\n    def addTwo(self, a, b):\n        return 3\n```",
    "3901": "```python\nclass Solution:\n    def sortedSquares(self, nums):\n        return [1, 4, 9]\n```",
}


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return load_livecodebench(path=str(SAMPLE))


def test_sample_loads_public_and_private_tests(records: list[dict]) -> None:
    assert [r["task_id"] for r in records] == ["abc900_a", "1990A", "3900", "3901"]
    assert [r["n_tests"] for r in records] == [3, 3, 3, 3]
    assert [problem_kind(r) for r in records] == ["stdio", "stdio", "leetcode", "leetcode"]
    assert "read the inputs from stdin" in records[0]["problem"].lower()
    assert "def sortedSquares(self" in records[3]["problem"]


def test_right_solutions_pass_and_public_only_ones_fail(records: list[dict]) -> None:
    for record in records:
        right = grade_code(record, RIGHT[record["task_id"]], LIMITS)
        assert right.passed, (record["task_id"], right.error)
        wrong = grade_code(record, PUBLIC_ONLY[record["task_id"]], LIMITS)
        assert not wrong.passed, record["task_id"]


def test_stdio_output_compared_by_tokens_and_floats(records: list[dict]) -> None:
    mean = records[1]
    loose = "```python\nn = int(input())\nxs = list(map(int, input().split()))\nprint('  %.9f  ' % (sum(xs) / n))\n```"
    assert grade_code(mean, loose, LIMITS).passed
    off = "```python\nn = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs) / n + 1e-3)\n```"
    assert not grade_code(mean, off, LIMITS).passed


def test_pass_at_1_over_16_samples_with_standard_error() -> None:
    rows = [{"id": p, "correct": s < k, "length": 10, "finish_reason": "stop"}
            for p, k in (("a", 16), ("b", 8), ("c", 0)) for s in range(16)]
    metrics = summarize(rows, 1.0, 100)
    assert metrics["samples"] == 16 and metrics["pass_at_k"]["1"] == pytest.approx(0.5)
    assert metrics["accuracy"] == pytest.approx(0.5) and metrics["accuracy_se"] == pytest.approx((1 / 6) ** 0.5 / 3 ** 0.5)


def test_releases_map_to_hub_files() -> None:
    assert release_files("release_v3") == ["test.jsonl", "test2.jsonl", "test3.jsonl"]
    assert release_files("v5") == ["test5.jsonl"]
    with pytest.raises(LiveCodeBenchError, match="unknown LiveCodeBench release"):
        release_files("latest")


def test_private_tests_never_unpickle_objects() -> None:
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    hostile = base64.b64encode(zlib.compress(pickle.dumps(Boom()))).decode()
    with pytest.raises(LiveCodeBenchError, match="refusing to unpickle"):
        decode_tests(hostile)
    with pytest.raises(LiveCodeBenchError, match="neither JSON nor"):
        decode_tests("not json, not base64!")


def test_bad_rows_say_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(LiveCodeBenchError, match="lacks private_test_cases"):
        to_record({"question_id": "x", "question_content": "q", "public_test_cases": "[]"})
    row = json.loads(SAMPLE.read_text().splitlines()[2])
    row["metadata"] = "{}"
    with pytest.raises(LiveCodeBenchError, match="func_name"):
        to_record(row)
    with pytest.raises(LiveCodeBenchError, match="not found"):
        load_livecodebench(path=str(tmp_path / "missing.jsonl"))


def test_evaluate_stage_reads_the_livecodebench_task(recipe) -> None:
    from rac.recipe.settings import recipe_settings
    from rac.stages.evaluate import EvaluateError, load_problems, task_settings

    evaluate = recipe_settings(recipe(**{"model.id": "m", "evaluate.tasks": [
        {"name": "lcb", "type": "code", "dataset": "livecodebench", "path": SAMPLE, "limit": 2}]})).evaluate
    assert evaluate is not None
    task = task_settings(evaluate, evaluate.tasks[0])
    assert task["release"] == "release_v5"  # the schema default
    problems, field, answer_field = load_problems(task)
    assert [p["task_id"] for p in problems] == ["abc900_a", "1990A"] and (field, answer_field) == ("problem", None)
    with pytest.raises(EvaluateError, match=r"evaluate.tasks\[lcb\]: LiveCodeBench file not found"):
        load_problems({**task, "path": str(SAMPLE) + ".missing"})


def test_plan_knows_the_size_of_a_release() -> None:
    from rac.eval.livecodebench import release_problems
    from rac.workflow.estimate import evaluate_tokens
    from rac.workflow.preview import dataset_sizes

    assert (release_problems("release_v5"), release_problems("v6"), release_problems("release_v9")) == (880, 175, None)
    recipe = {"evaluate": {"max_new_tokens": 100, "samples": 16,
                           "tasks": [{"name": "lcb", "type": "code", "dataset": "livecodebench", "release": "release_v5"}]}}
    assert evaluate_tokens(recipe, dataset_sizes(recipe)) == (880 * 100 * 16, [])
    from rac.workflow.review import eval_tokens

    assert eval_tokens(recipe) == 880 * 100 * 16  # the cost model of rac review / rac diff --git
