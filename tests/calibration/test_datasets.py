"""Builtin data registry, local/hub loading, field errors and reference answers."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys

import pytest

from rac.calibration.datasets import (
    BUILTIN_DATASETS,
    DatasetError,
    extract_reference_answer,
    get_dataset_info,
    load_records,
    source_fields,
)

NEEDS_DATA = "needs the data extra: pip install 'rac[data]'"
EXPECTED_ROWS = {"gsm8k_train": 2000, "gsm8k_test": 1319, "math_train": 2000, "math500": 500, "c4": 300,
                 "humaneval": 164, "leetcode": 200}


@pytest.mark.parametrize("name", sorted(EXPECTED_ROWS))
def test_builtin_datasets_load_with_their_default_fields(name):
    info = BUILTIN_DATASETS[name]
    records = load_records({"dataset": name})
    assert len(records) == EXPECTED_ROWS[name]
    assert all(isinstance(r[info.field], str) and r[info.field] for r in records)
    if info.answer_field:
        assert all(info.answer_field in r for r in records)
    assert info.license and info.origin


def test_unknown_builtin_suggests_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'gsm8k_train'"):
        load_records({"dataset": "gsm8k_trian"})
    with pytest.raises(DatasetError, match="builtin datasets"):
        get_dataset_info("nothing-like-it")


def test_missing_field_names_the_file_and_the_available_fields():
    with pytest.raises(DatasetError, match=r"math_train.*'question'.*available fields: answer, difficulty, problem, type"):
        load_records({"dataset": "math_train", "field": "question"})


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".jsonl.gz", ".parquet"])
def test_local_files_in_every_format(tmp_path, suffix):
    rows = [{"q": "What is 1+1?", "a": "#### 2"}, {"q": "What is 2+2?", "a": "#### 4"}]
    path = tmp_path / f"data{suffix}"
    if suffix == ".parquet":
        pa = pytest.importorskip("pyarrow", reason=NEEDS_DATA)
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    else:
        text = "".join(json.dumps(r) + "\n" for r in rows)
        path.write_bytes(gzip.compress(text.encode()) if suffix.endswith(".gz") else text.encode())
    assert load_records({"path": str(path), "field": "q", "answer_field": "a"}) == rows


def test_bad_local_sources_raise_clear_errors(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        load_records({"path": str(tmp_path / "absent.jsonl"), "field": "q"})
    bad = tmp_path / "bad.json"
    bad.write_text('{"not": "a list"}')
    with pytest.raises(DatasetError, match="list of objects"):
        load_records({"path": str(bad), "field": "q"})
    csv = tmp_path / "data.csv"
    csv.write_text("q\n1\n")
    with pytest.raises(DatasetError, match="unsupported"):
        load_records({"path": str(csv), "field": "q"})
    with pytest.raises(DatasetError, match="dataset.*or `path`"):
        load_records({"field": "q"})


def test_hub_source_fails_clearly_when_offline():
    with pytest.raises(DatasetError, match="hf:<name>"):
        load_records({"path": "hf:", "field": "q"})
    pytest.importorskip("datasets", reason=NEEDS_DATA)
    with pytest.raises(DatasetError, match="cannot load hub dataset 'hf:surely/absent-dataset-xyz'"):
        load_records({"path": "hf:surely/absent-dataset-xyz", "split": "train", "field": "q"})


def test_source_fields_fall_back_to_builtin_defaults():
    assert source_fields({"dataset": "math_train", "field": None, "answer_field": None}) == ("problem", "answer")
    assert source_fields({"dataset": "gsm8k_train"}) == ("question", "answer")
    assert source_fields({"path": "x.jsonl", "field": "prompt"}) == ("prompt", None)


def test_reference_answers():
    gsm = BUILTIN_DATASETS["gsm8k_train"]
    assert extract_reference_answer({"answer": "work...\n#### 1,234"}, gsm) == "1234"
    assert extract_reference_answer(load_records({"dataset": "gsm8k_train"})[0], gsm) == "72"
    math = BUILTIN_DATASETS["math500"]
    assert extract_reference_answer(load_records({"dataset": "math500"})[0], math) == r"\left( 3, \frac{\pi}{2} \right)"
    assert extract_reference_answer({"text": "x"}, BUILTIN_DATASETS["c4"]) is None


def test_datasets_module_does_not_import_torch():
    code = "import sys, rac.calibration.datasets; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- every unreadable data file is a DatasetError naming the file and the line ----------------------
def _jsonl(path, lines: list[bytes], gz: bool = False):
    data = b"".join(line + b"\n" for line in lines)
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


GOOD = b'{"q": "What is 1+1?", "a": "#### 2"}'


def test_bad_jsonl_row_is_reported_at_its_own_line(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, b'{"q": "broken", '])
    with pytest.raises(DatasetError, match=r"d\.jsonl:3: invalid JSON"):
        load_records({"path": path, "field": "q"})


def test_blank_lines_count_as_lines(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, b"", b"  ", b"[1, 2]"])
    with pytest.raises(DatasetError, match=r"d\.jsonl:4: expected one JSON object per line, got list"):
        load_records({"path": path, "field": "q"})


@pytest.mark.parametrize("row,kind", [(b"[1, 2]", "list"), (b'"text"', "str"), (b"3", "int"), (b"null", "NoneType")])
def test_non_object_rows_are_errors(tmp_path, row, kind):
    path = _jsonl(tmp_path / "d.jsonl.gz", [GOOD, row], gz=True)
    with pytest.raises(DatasetError, match=rf"d\.jsonl\.gz:2: expected one JSON object per line, got {kind}"):
        load_records({"path": path, "field": "q"})


def test_truncated_gzip_is_an_error_naming_the_file(tmp_path):
    full = gzip.compress(b"".join(GOOD + b"\n" for _ in range(2000)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    with pytest.raises(DatasetError, match=r"cut\.jsonl\.gz:\d+: unreadable after line \d+: truncated or corrupt gzip"):
        load_records({"path": str(path), "field": "q"})
    path.write_bytes(b"not gzip at all\n")
    with pytest.raises(DatasetError, match=r"cut\.jsonl\.gz: unreadable: truncated or corrupt gzip"):
        load_records({"path": str(path), "field": "q"})


def test_corrupt_parquet_is_an_error_naming_the_file(tmp_path):
    pa = pytest.importorskip("pyarrow", reason=NEEDS_DATA)
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"q": "x"}] * 100), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"d\.parquet: not a readable parquet file"):
        load_records({"path": str(path), "field": "q"})


def test_non_utf8_text_names_line_and_byte(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [GOOD, GOOD, b'{"q": "caf\xe9"}'])
    with pytest.raises(DatasetError, match=r"d\.jsonl:3: not UTF-8 text \(byte 0xe9 at column 11\)"):
        load_records({"path": path, "field": "q"})
    latin = tmp_path / "d.json"
    latin.write_bytes(b'[\n{"q": "ok"},\n{"q": "caf\xe9"}\n]')
    with pytest.raises(DatasetError, match=r"d\.json:3: not UTF-8 text \(byte 0xe9\)"):
        load_records({"path": str(latin), "field": "q"})


def test_json_list_errors_name_line_or_item(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n{"q": "a"},\n{"q": "b",,}\n]')
    with pytest.raises(DatasetError, match=r"d\.json:3: invalid JSON"):
        load_records({"path": str(path), "field": "q"})
    path.write_text('[{"q": "a"}, 7]')
    with pytest.raises(DatasetError, match=r"d\.json: item 1 of the list is int, not an object"):
        load_records({"path": str(path), "field": "q"})


def test_utf8_bom_is_accepted(tmp_path):
    path = _jsonl(tmp_path / "d.jsonl", [b"\xef\xbb\xbf" + GOOD])
    assert load_records({"path": path, "field": "q"})[0]["q"] == "What is 1+1?"


def test_missing_field_and_non_text_field_name_the_line(tmp_path):
    from rac.calibration.sources import source_items

    path = _jsonl(tmp_path / "d.jsonl", [GOOD, b"", b'{"a": "#### 3"}'])
    with pytest.raises(DatasetError, match=r"d\.jsonl:3: field 'q' \(field\) missing; available fields: a"):
        load_records({"path": path, "field": "q"})
    path = _jsonl(tmp_path / "e.jsonl", [GOOD, b'{"q": ["not", "text"], "a": "1"}'])
    with pytest.raises(DatasetError, match=r"e\.jsonl:2: field 'q' is list, not text"):
        source_items({"path": path, "field": "q"}, 0, 0)
