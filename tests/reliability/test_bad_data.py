"""Every bad data file, through `rac run`, as a calibration source and as an eval task: the run fails
with one clear message naming the file (and the line where a file has lines), never a traceback."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pytest

from rac.cli import EXIT_FAILED, main

GOOD = '{"q": "What is 1+1?", "a": "2", "id": "p%d"}'


def _rows(n: int) -> bytes:
    return "".join(GOOD % i + "\n" for i in range(n)).encode()


def _parquet(path: Path) -> None:
    pa = pytest.importorskip("pyarrow", reason="needs the data extra: pip install 'rac[data]'")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"q": "x", "a": "1"}] * 200), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated(path: Path) -> None:
    full = gzip.compress(_rows(3000))
    path.write_bytes(full[: len(full) // 2])


# name -> (writer, expected message as a regex; {file} is the file's path)
BAD_FILES = {
    "bad_row.jsonl": (lambda p: p.write_bytes(_rows(2) + b'{"q": "cut here\n'), r"{file}:3: invalid JSON"),
    "non_object.jsonl": (lambda p: p.write_bytes(_rows(1) + b"[1, 2]\n"),
                         r"{file}:2: expected one JSON object per line, got list"),
    "truncated.jsonl.gz": (_truncated, r"{file}:\d+: unreadable after line \d+: truncated or corrupt gzip data"),
    "corrupt.parquet": (_parquet, r"{file}: not a readable parquet file"),
    "latin1.jsonl": (lambda p: p.write_bytes(_rows(1) + '{"q": "café", "a": "1"}\n'.encode("latin-1")),
                     r"{file}:2: not UTF-8 text \(byte 0xe9 at column 11\)"),
    "missing_field.jsonl": (lambda p: p.write_bytes(_rows(1) + b'{"question": "x", "a": "1"}\n'),
                            r"{file}:2: field 'q' \(field\) missing"),
    "empty.jsonl": (lambda p: p.write_bytes(b"\n\n"), r"{file}: no records"),
}
EVAL_ONLY = {
    "duplicate_ids.jsonl": (lambda p: p.write_bytes(_rows(2) + (GOOD % 0).encode() + b"\n"),
                            r"problem id 'p0' appears twice \({file}:1 and {file}:3\)"),
}


@pytest.fixture(autouse=True)
def _fresh_console_logging():
    """`rac.cli.main` attaches a console log handler to the stderr of the test that first calls it; drop
    it afterwards so the next test's run logs to its own captured stderr."""
    logger = logging.getLogger("rac")
    before, level = list(logger.handlers), logger.level
    yield
    for handler in logger.handlers[:]:
        if handler not in before:
            logger.removeHandler(handler)
    logger.setLevel(level)


def _recipe(tmp_path: Path, model_dir: Path, data: Path, where: str, extra: str = "") -> Path:
    if where == "calibration":
        body = (f"calibration:\n  kind: prompt\n  sources: [{{path: '{data}', field: q}}]\n  budget: {{tokens: 64}}\n"
                "prune: {sparsity: 0.5}\n")
    else:
        body = (f"evaluate:\n  max_new_tokens: 2\n  tasks: [{{name: t, type: math, path: '{data}', field: q, "
                f"answer_field: a{extra}}}]\n")
    recipe = tmp_path / f"{where}.yaml"
    recipe.write_text(f"version: 1\nmodel: {{id: '{model_dir}'}}\n{body}run: {{device: cpu}}\n")
    return recipe


def _run(tmp_path: Path, recipe: Path, capsys) -> str:
    code = main(["run", str(recipe), "--run-dir", str(tmp_path / "run"), "--cache", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == EXIT_FAILED, captured
    text = " ".join((captured.out + captured.err).split())  # undo the terminal's line wrapping
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("where", ["calibration", "evaluate"])
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_data_file_fails_the_run_with_a_located_error(tmp_path, tiny_model_dir, capsys, name, where):
    writer, pattern = BAD_FILES[name]
    data = tmp_path / name
    writer(data)
    text = _run(tmp_path, _recipe(tmp_path, tiny_model_dir, data, where), capsys)
    assert re.search(pattern.format(file=re.escape(str(data))), text), text


def test_duplicate_problem_ids_fail_the_run(tmp_path, tiny_model_dir, capsys):
    writer, pattern = EVAL_ONLY["duplicate_ids.jsonl"]
    data = tmp_path / "duplicate_ids.jsonl"
    writer(data)
    text = _run(tmp_path, _recipe(tmp_path, tiny_model_dir, data, "evaluate"), capsys)
    assert re.search(pattern.format(file=re.escape(str(data))), text), text


def test_eval_offset_past_the_end_fails_the_run(tmp_path, tiny_model_dir, capsys):
    recipe = tmp_path / "probe.yaml"
    recipe.write_text(f"version: 1\nmodel: {{id: '{tiny_model_dir}'}}\nevaluate:\n  tasks: [{{name: p, type: probe, "
                      "dataset: gsm8k_test, offset: 5000, t_max: 2}]\nrun: {device: cpu}\n")
    text = _run(tmp_path, recipe, capsys)
    assert re.search(r"evaluate.tasks\[p\]: offset 5000 is past the end of \S*gsm8k_test.jsonl.gz \(1319 records\): "
                     "no problems to evaluate", text), text
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())  # written for a failed run too
    assert metrics["status"] == "failed" and metrics["failure"]["stage"] == "evaluate" and metrics["evaluate"] == {}
