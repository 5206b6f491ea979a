"""Recipe calibration sources as ordered prompt/document items, and budget shares by weight.

Each source's records are shuffled once with the calibration seed (a fixed order per seed), so the
rollout stage and the mix walk the same sequence and a larger budget only ever extends a smaller one.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass
from typing import Any

from rac.calibration.datasets import (
    BUILTIN_DATASETS,
    DatasetError,
    extract_reference_answer,
    load_records,
    source_fields,
)


@dataclass(frozen=True)
class SourceItem:
    """One problem (or document) of a calibration source."""

    source: int  # position of the source in ``calibration.sources``
    record: int  # index of the record in the source file
    text: str
    answer: Any  # reference final answer, None when the source has none


def source_label(source: dict) -> str:
    """Short human name of a source (dataset name or path)."""
    return str(source.get("dataset") or source.get("path") or "?")


def _render_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list) and all(isinstance(v, dict) and {"input", "output"} <= set(v) for v in value):
        return "\n\n".join(f"Input\n{v['input']}\nOutput\n{v['output']}" for v in value)
    return str(value)


def render_template(template: str, record: dict, where: str) -> str:
    """``template`` with each ``{field}`` replaced by the record's value (None -> "", examples -> blocks);
    a paragraph (text between blank lines) whose fields are all empty is left out, heading included."""
    paragraphs = []
    for part in template.split("\n\n"):
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(part) if name is not None]
        except ValueError as exc:
            raise DatasetError(f"{where}: template {template!r}: {exc}") from None
        missing = sorted({n for n in names if not n.isidentifier() or n not in record})
        if missing:
            raise DatasetError(f"{where}: template field(s) {', '.join(missing)} not in the record; "
                               f"fields: {', '.join(sorted(record))}")
        values = {n: _render_value(record[n]) for n in names}
        if names and not any(v.strip() for v in values.values()):
            continue
        paragraphs.append(part.format_map(values))
    return "\n\n".join(paragraphs)


def source_items(source: dict, source_index: int, seed: int) -> list[SourceItem]:
    """All usable items of ``source`` in the seeded order (empty problems are skipped); the text is the
    record's ``field``, or the source's ``template`` filled from the record."""
    records = load_records(source)
    field, answer_field = source_fields(source)
    template = source.get("template")
    if not field and not template:
        raise DatasetError(f"calibration source {source_label(source)!r}: `field` (the prompt/text field) "
                           "or `template` is required")
    info = BUILTIN_DATASETS.get(source.get("dataset") or "")
    order = list(range(len(records)))
    random.Random(f"{seed}:{source_index}:{source_label(source)}").shuffle(order)
    items = []
    for index in order:
        if template:
            text = render_template(template, records[index], f"{source_label(source)} record {index}")
        else:
            text = records[index][field]
        if not isinstance(text, str):
            where = records.location(index) if hasattr(records, "location") else f"{source_label(source)} (record {index})"
            raise DatasetError(f"{where}: field {field!r} is {type(text).__name__}, not text")
        if text.strip():
            answer = extract_reference_answer(records[index], info, answer_field) if answer_field else None
            items.append(SourceItem(source_index, index, text, answer))
    return items


def source_weights(sources: list[dict]) -> list[float]:
    """Normalised weights of the sources (missing weight = 1); >= 0 each, positive in sum."""
    if not sources:
        raise DatasetError("calibration.sources is empty: name at least one source")
    raw = [float(s.get("weight", 1.0) if s.get("weight") is not None else 1.0) for s in sources]
    if any(w < 0 for w in raw) or sum(raw) <= 0:
        raise DatasetError(f"calibration.sources: weights must be >= 0 with a positive sum, got {raw}")
    total = sum(raw)
    return [w / total for w in raw]


def split_budget(total: int, weights: list[float]) -> list[int]:
    """Integer shares of ``total`` proportional to ``weights`` (largest remainder; they sum to total)."""
    exact = [total * w for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: total - sum(shares)]:
        shares[i] += 1
    return shares


@dataclass(frozen=True)
class Share:
    """One source's part of ``calibration.budget``: a token and/or a prompt limit (None = no limit)."""

    tokens: int | None
    prompts: int | None

    @property
    def empty(self) -> bool:
        return self.tokens == 0 or self.prompts == 0

    def to_dict(self) -> dict:
        return {"tokens": self.tokens, "prompts": self.prompts}


def budget_of(calib_cfg: dict) -> tuple[int | None, int | None]:
    """(tokens, prompts) of ``calibration.budget``; at least one is set, and when both are, both apply."""
    budget = calib_cfg.get("budget") or {}
    tokens, prompts = budget.get("tokens"), budget.get("prompts")
    if tokens is None and prompts is None:
        raise DatasetError("calibration.budget: set `tokens` or `prompts`")
    for unit, value in (("tokens", tokens), ("prompts", prompts)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise DatasetError(f"calibration.budget.{unit} must be a positive integer, got {value!r}")
    return tokens, prompts


def source_shares(calib_cfg: dict) -> list[Share]:
    """Each source's share of the budget, proportional to its weight."""
    tokens, prompts = budget_of(calib_cfg)
    weights = source_weights(calib_cfg.get("sources") or [])
    by_tokens = split_budget(tokens, weights) if tokens is not None else [None] * len(weights)
    by_prompts = split_budget(prompts, weights) if prompts is not None else [None] * len(weights)
    return [Share(t, p) for t, p in zip(by_tokens, by_prompts)]
