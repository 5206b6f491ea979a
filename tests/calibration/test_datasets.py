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
        import pyarrow as pa
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
    with pytest.raises(DatasetError, match="cannot load hub dataset 'hf:surely/absent-dataset-xyz'"):
        load_records({"path": "hf:surely/absent-dataset-xyz", "split": "train", "field": "q"})
    with pytest.raises(DatasetError, match="hf:<name>"):
        load_records({"path": "hf:", "field": "q"})


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
