"""Data set registry and record loading: bundled short names, local files and hub datasets.

No torch import here: the recipe validator imports this module to check dataset names.
"""

from __future__ import annotations

import difflib
import gzip
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


class DatasetError(ValueError):
    """A data source cannot be found, read or lacks the requested field."""


@dataclass(frozen=True)
class DatasetInfo:
    """A bundled data set: where it lives and which fields hold the problem and the answer."""

    name: str
    file: str
    format: str  # "jsonl" (optionally .gz) | "json" (list) | "parquet"
    field: str  # default prompt/text field
    answer_field: str | None  # reference answer field, None when there is none
    kind: str  # "math" | "code" | "text"
    license: str
    origin: str

    @property
    def path(self) -> Path:
        return DATA_DIR / self.file


def _info(name: str, field: str, answer: str | None, kind: str, license: str, origin: str) -> DatasetInfo:
    return DatasetInfo(name, f"{name}.jsonl.gz", "jsonl", field, answer, kind, license, origin)


BUILTIN_DATASETS: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        _info("gsm8k_train", "question", "answer", "math", "MIT",
              "openai/grade-school-math train (first 2000 rows)"),
        _info("gsm8k_test", "question", "answer", "math", "MIT",
              "openai/grade-school-math test"),
        _info("math_train", "problem", "answer", "math", "MIT",
              "agentica-project/rllm MATH train (first 2000 rows)"),
        _info("math500", "problem", "answer", "math", "MIT",
              "HuggingFaceH4/MATH-500 via MobileLLM/BudgetThinker"),
        _info("c4", "text", None, "text", "ODC-By",
              "allenai C4 en train shard 0 (first 300 documents)"),
        _info("humaneval", "prompt", None, "code", "MIT", "openai/human-eval"),
        _info("leetcode", "problem", None, "code", "MIT",
              "agentica-project/rllm leetcode test"),
    )
}


def get_dataset_info(name: str) -> DatasetInfo:
    """The bundled data set called ``name``; unknown names raise with a did-you-mean hint."""
    if name in BUILTIN_DATASETS:
        return BUILTIN_DATASETS[name]
    close = difflib.get_close_matches(name, list(BUILTIN_DATASETS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DatasetError(
        f"unknown dataset {name!r}{hint}; builtin datasets: {', '.join(sorted(BUILTIN_DATASETS))}"
    )


def read_file(path: Path) -> list[dict]:
    """Records of a local ``.jsonl``/``.json`` (list)/``.parquet`` file, optionally gzip-compressed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"data file not found: {path}")
    name = path.name.lower().removesuffix(".gz")
    try:
        if name.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
        opener = gzip.open if path.name.lower().endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as handle:
            text = handle.read()
        if name.endswith(".json"):
            data = json.loads(text)
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DatasetError(f"{path}: a .json data file must hold a list of objects")
            return data
        if name.endswith(".jsonl"):
            return [json.loads(line) for line in text.splitlines() if line.strip()]
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DatasetError(f"cannot read data file {path}: {exc}") from exc
    raise DatasetError(f"{path}: unsupported data file type (use .jsonl, .json, .parquet, optionally .gz)")


def _load_hub(spec: str, split: str, revision: str | None = None) -> list[dict]:
    """``hf:<name>[:config]`` through ``datasets.load_dataset`` (needs the hub or a local HF cache)."""
    parts = spec[len("hf:"):].split(":")
    if not parts[0] or len(parts) > 2:
        raise DatasetError(f"bad hub dataset spec {spec!r}; expected hf:<name>[:config]")
    try:
        import datasets
    except ImportError as exc:
        raise DatasetError(f"{spec}: the `datasets` package is needed (pip install 'rac[data]')") from exc
    try:
        data = datasets.load_dataset(parts[0], parts[1] if len(parts) == 2 else None, split=split, revision=revision)
    except Exception as exc:  # offline, unknown name, bad split: all surface as one clear error
        raise DatasetError(
            f"cannot load hub dataset {spec!r} (split {split!r}): {exc}. Without network access, "
            "download it once or point `path` at a local jsonl/json/parquet file."
        ) from exc
    return [dict(row) for row in data]


def load_records(source: dict) -> list[dict]:
    """All records of a recipe source (``dataset`` short name, local ``path`` or ``hf:`` spec).

    When the source names a ``field`` (and ``answer_field``), every record is checked to have it;
    a missing field raises an error naming the file and the fields that do exist.
    """
    dataset, path = source.get("dataset"), source.get("path")
    if dataset and path:
        raise DatasetError(f"calibration source sets both dataset={dataset!r} and path={path!r}; use one")
    if dataset:
        info = get_dataset_info(dataset)
        where, records = str(info.path), read_file(info.path)
    elif path:
        where = str(path)
        if str(path).startswith("hf:"):
            records = _load_hub(str(path), source.get("split") or "train", source.get("revision"))
        else:
            records = read_file(Path(path))
    else:
        raise DatasetError("a data source needs `dataset` (builtin short name) or `path`")
    if not records:
        raise DatasetError(f"{where}: no records")
    field, answer = source_fields(source)
    for key, name in (("field", field), ("answer_field", answer)):
        if name and any(name not in record for record in records):
            bad = next(record for record in records if name not in record)
            raise DatasetError(
                f"{where}: field {name!r} ({key}) missing; available fields: {', '.join(sorted(bad))}"
            )
    return records


def source_fields(source: dict) -> tuple[str | None, str | None]:
    """(prompt/text field, answer field) of a source; null keys fall back to the builtin's defaults."""
    info = BUILTIN_DATASETS.get(source.get("dataset") or "")
    field = source.get("field") or (info.field if info else None)
    answer = source.get("answer_field") or (info.answer_field if info else None)
    return field, answer


_GSM8K_ANSWER = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def extract_reference_answer(record: dict, info: DatasetInfo | None, answer_field: str | None = None) -> Any:
    """The final reference answer of a record: GSM8K ``#### N`` -> ``"N"``; MATH ``answer`` as is."""
    field = answer_field or (info.answer_field if info else None)
    if not field or field not in record or record[field] is None:
        return None
    value = record[field]
    if isinstance(value, str):
        match = _GSM8K_ANSWER.search(value) if "####" in value else None
        return match.group(1).replace(",", "").strip() if match else value.strip()
    return value
