"""Data set registry and record loading: bundled short names, local files and hub datasets.

No torch import here: the recipe validator imports this module to check dataset names.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rac.errors import RacError
from rac.suggest import did_you_mean

DATA_DIR = Path(__file__).resolve().parents[1] / "data"


class DatasetError(RacError, ValueError):
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
    hint = did_you_mean(name, BUILTIN_DATASETS)
    raise DatasetError(
        f"unknown dataset {name!r}{hint}; builtin datasets: {', '.join(sorted(BUILTIN_DATASETS))}"
    )


class Records(list):
    """The records of one data source, plus where each came from (``file:line`` for error messages)."""

    def __init__(self, rows: list[dict], where: str, lines: list[int] | None = None) -> None:
        super().__init__(rows)
        self.where = where
        self.lines = lines

    def location(self, index: int) -> str:
        """``file:line`` of record ``index`` (``file (record i)`` when lines are unknown: json, parquet, hub)."""
        if self.lines is not None and 0 <= index < len(self.lines):
            return f"{self.where}:{self.lines[index]}"
        return f"{self.where} (record {index})"


def _open_binary(path: Path) -> Any:
    return gzip.open(path, "rb") if path.name.lower().endswith(".gz") else open(path, "rb")


def _decode(raw: bytes, path: Path, line: int) -> str:
    try:
        return raw.decode("utf-8-sig" if line == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        column = len(raw[: exc.start].decode("utf-8", errors="replace")) + 1
        raise DatasetError(
            f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {column}); "
            "re-encode the file as UTF-8"
        ) from None


def _corrupt(path: Path, lines_read: int, exc: BaseException) -> DatasetError:
    """A file whose bytes end early or do not decompress (``.gz`` cut short, not gzip at all...)."""
    kind = "gzip " if path.name.lower().endswith(".gz") else ""
    where = f"{path}:{lines_read + 1}: unreadable after line {lines_read}" if lines_read else f"{path}: unreadable"
    return DatasetError(f"{where}: truncated or corrupt {kind}data ({type(exc).__name__}: {exc})")


def _read_jsonl(path: Path) -> Records:
    """One JSON object per line; blank lines are skipped; errors name the 1-based line."""
    rows: list[dict] = []
    lines: list[int] = []
    line = 0
    try:
        with _open_binary(path) as handle:
            for line, raw in enumerate(handle, 1):
                text = _decode(raw, path, line)
                if not text.strip():
                    continue
                try:
                    row = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise DatasetError(f"{path}:{line}: invalid JSON ({exc.msg} at column {exc.colno})") from None
                if not isinstance(row, dict):
                    raise DatasetError(f"{path}:{line}: expected one JSON object per line, got {type(row).__name__}")
                rows.append(row)
                lines.append(line)
    except (EOFError, OSError, zlib.error) as exc:
        raise _corrupt(path, line, exc) from None
    return Records(rows, str(path), lines)


def _read_json(path: Path) -> Records:
    """A JSON list of objects; errors name the line (syntax, encoding) or the item."""
    try:
        with _open_binary(path) as handle:
            raw = handle.read()
    except (EOFError, OSError, zlib.error) as exc:
        raise _corrupt(path, 0, exc) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x}); re-encode the file as UTF-8") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path}: a .json data file must hold a list of objects, got {type(data).__name__}")
    for index, row in enumerate(data):
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: item {index} of the list is {type(row).__name__}, not an object")
    return Records(data, str(path))


def _read_parquet(path: Path) -> Records:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise DatasetError(f"{path}: reading parquet needs pyarrow (pip install 'rac[data]')") from exc
    try:
        return Records(pq.read_table(path).to_pylist(), str(path))
    except (pa.ArrowException, OSError) as exc:
        raise DatasetError(f"{path}: not a readable parquet file ({type(exc).__name__}: {exc})") from None


def read_file(path: Path) -> Records:
    """Records of a local ``.jsonl``/``.json`` (list)/``.parquet`` file, optionally gzip-compressed.

    Every problem (bad JSON, a row that is not an object, non-UTF-8 bytes, a truncated ``.gz``, a
    corrupt parquet) is a :class:`DatasetError` naming the file and, where it has lines, the line."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DatasetError(f"data file not found: {path}")
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(".parquet"):
        return _read_parquet(path)
    if name.endswith(".jsonl"):
        return _read_jsonl(path)
    if name.endswith(".json"):
        return _read_json(path)
    raise DatasetError(f"{path}: unsupported data file type (use .jsonl, .json, .parquet, optionally .gz)")


def _load_hub(spec: str, split: str, revision: str | None = None) -> Records:
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
    return Records([dict(row) for row in data], spec)


def load_records(source: dict) -> Records:
    """All records of a recipe source (``dataset`` short name, local ``path`` or ``hf:`` spec).

    When the source names a ``field`` (and ``answer_field``), every record is checked to have it;
    a missing field raises an error naming the file and the fields that do exist.
    """
    dataset, path = source.get("dataset"), source.get("path")
    if dataset and path:
        raise DatasetError(f"calibration source sets both dataset={dataset!r} and path={path!r}; use one")
    if dataset:
        info = get_dataset_info(dataset)
        records = read_file(info.path)
    elif path:
        if str(path).startswith("hf:"):
            records = _load_hub(str(path), source.get("split") or "train", source.get("revision"))
        else:
            records = read_file(Path(path))
    else:
        raise DatasetError("a data source needs `dataset` (builtin short name) or `path`")
    if not records:
        raise DatasetError(f"{records.where}: no records")
    field, answer = source_fields(source)
    for key, name in (("field", field), ("answer_field", answer)):
        if name and any(name not in record for record in records):
            index = next(i for i, record in enumerate(records) if name not in record)
            raise DatasetError(
                f"{records.location(index)}: field {name!r} ({key}) missing; available fields: "
                f"{', '.join(sorted(records[index]))}"
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
