"""Which run goes in which table cell: one cell per distinct experiment, never two runs merged.

A run's identity is its whole resolved recipe minus bookkeeping keys (name, output paths). Runs with
the same identity would share a cell: that is an error naming both run directories, unless the user
aggregates over a key (``--aggregate seed``): the key then leaves the identity and the runs that
differ only in it form one cell (mean ± SE over them). Rows are labelled by the model, the
compression, and every other recipe key that differs between cells (budget, seed, any generic
``key=value``); columns by the calibration. If two cells still get the same labels, the keys that
tell them apart are added as row columns, so every run stays visible.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rac.report.labels import (
    budget_label,
    calibration_label,
    compression_label,
    compression_value,
    flatten,
    model_label,
    uses_calibration,
    value_text,
)
from rac.report.runs import ReportError, RunRecord

BOOKKEEPING = ("name", "description", "version", "base", "run.output_dir", "run.name", "export.path")
MODEL_KEYS = ("model.id", "model.revision", "model.gguf_file")
COMPRESSION_KEYS = ("prune", "quantize", "export")
CALIBRATION_KEYS = ("calibration.kind", "calibration.sources", "calibration.text_seq_len", "calibration.rollout.model")
BUDGET_KEY = "evaluate.max_new_tokens"
FILL = "*"  # a calibration-free run (dense, FP8 only) alone in its row fills every calibration column


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


@dataclass
class Cell:
    """One table cell: its runs (one, or several when aggregated), row labels, calibration column."""

    runs: list[RunRecord]
    row: tuple[str, ...] = ()
    column: str = FILL
    sort_key: tuple = ()


@dataclass
class Layout:
    """Cells with their row headers (``lead``) and calibration columns."""

    lead: list[str]
    columns: list[str]
    cells: list[Cell]
    aggregated: list[str] = field(default_factory=list)


def _aggregate_keys(flats: list[dict[str, Any]], names: Sequence[str]) -> list[str]:
    keys = sorted({k for flat in flats for k in flat})
    chosen: list[str] = []
    for name in names:
        hits = [k for k in keys if k.rsplit(".", 1)[-1] == "seed"] if name == "seed" else \
            [k for k in keys if _under(k, (name,))]
        if not hits:
            raise ReportError(f"--aggregate {name}: no run's recipe has this key (try 'seed' or a dotted key "
                              f"such as run.seed)")
        chosen += [k for k in hits if k not in chosen]
    return chosen


def _differing(flats: Sequence[dict[str, Any]], keys: Sequence[str] | None = None) -> list[str]:
    union = sorted({k for flat in flats for k in flat} if keys is None else keys)
    return [k for k in union if len({value_text(f[k]) if k in f else "<unset>" for f in flats}) > 1]


def _collapse_sections(flats: Sequence[dict[str, Any]], keys: list[str]) -> tuple[list[str], set[str]]:
    """Keys that differ only because their section is off in some runs (``recover: null`` there,
    ``recover.tokens: 4096`` in one run) become one column for the section, read "on" / "off"; a key
    whose value also differs among the runs that set the section stays. Returns (keys, sections)."""
    out: list[str] = []
    sections: set[str] = set()
    for key in keys:
        parts = key.split(".")
        section = next((".".join(parts[:n]) for n in range(1, len(parts))
                        if not all(_has_section(f, ".".join(parts[:n])) for f in flats)), None)
        if section is not None and len({value_text(f[key]) for f in flats if key in f}) == 1 and all(
                key in f or not _has_section(f, section) for f in flats):
            key = section
            sections.add(section)
        if key not in out:
            out.append(key)
    return out, sections


def _has_section(flat: dict[str, Any], section: str) -> bool:
    """Whether a flattened recipe sets anything under ``section`` (absent or null: off)."""
    return any(k.startswith(section + ".") for k in flat)


def _cell_text(flat: dict[str, Any], key: str, sections: set[str]) -> str:
    if key in sections:
        return "on" if _has_section(flat, key) else "off"
    return value_text(flat[key]) if key in flat else "–"


def group_runs(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> tuple[list[list[RunRecord]], list[str]]:
    """Runs grouped by identity; raises ReportError when two runs would silently share a cell."""
    flats = [{k: v for k, v in flatten(r.recipe).items() if not _under(k, BOOKKEEPING)} for r in records]
    agg_keys = _aggregate_keys(flats, aggregate) if aggregate else []
    groups: dict[tuple, list[int]] = {}
    for index, flat in enumerate(flats):
        identity = tuple(sorted((k, value_text(v)) for k, v in flat.items() if k not in agg_keys))
        groups.setdefault(identity, []).append(index)
    for members in groups.values():
        seen: dict[tuple, int] = {}
        for index in members:
            over = tuple(value_text(flats[index].get(k)) for k in agg_keys)
            if over in seen:
                first = records[seen[over]].path
                hint = (f"differ in none of the aggregated keys ({', '.join(agg_keys)})" if agg_keys else
                        "have the same resolved recipe (bookkeeping keys aside)")
                raise ReportError(f"runs {first} and {records[index].path} would share one table cell: they {hint}; "
                                  "remove one of them, or pass --aggregate KEY (e.g. seed) to average runs that "
                                  "differ only in KEY")
            seen[over] = index
    return [[records[i] for i in members] for members in groups.values()], agg_keys


def _seed_label(flat: dict[str, Any], keys: list[str]) -> str:
    values = {value_text(flat.get(k)) for k in keys}
    if len(values) == 1:
        return f"seed {values.pop()}"
    return ", ".join(f"{k}={value_text(flat.get(k))}" for k in keys)


def arrange(records: Sequence[RunRecord], aggregate: Sequence[str] = ()) -> Layout:
    """Every distinct experiment its own (row, column) cell, with labels a reader of the paper knows."""
    if not records:
        raise ReportError("no runs to tabulate")
    groups, agg_keys = group_runs(records, aggregate)
    heads = [g[0] for g in groups]
    flats = [{k: v for k, v in flatten(r.recipe).items() if not _under(k, BOOKKEEPING) and k not in agg_keys}
             for r in heads]
    varying, sections = _collapse_sections(flats, _differing(flats))
    calibrated = [r.recipe for r in heads if uses_calibration(r.recipe)]
    policies = {bool(((c.get("calibration") or {}).get("rollout") or {}).get("model"))
                for c in calibrated if (c.get("calibration") or {}).get("kind", "rac") == "rac"}
    contrast = len(policies) > 1
    by_label: dict[str, set[str]] = {}
    for recipe in calibrated:
        by_label.setdefault(calibration_label(recipe, contrast), set()).add(
            value_text((recipe.get("calibration") or {}).get("sources")))
    show_sources = any(len(v) > 1 for v in by_label.values())
    seed_keys = [k for k in varying if k.rsplit(".", 1)[-1] == "seed"]
    generic = [k for k in varying if k not in seed_keys and k != BUDGET_KEY
               and not _under(k, MODEL_KEYS + COMPRESSION_KEYS + CALIBRATION_KEYS)]
    extra: list[str] = []
    while True:
        lead = ["model", "compression"] + (["budget"] if BUDGET_KEY in varying else []) + \
            (["seed"] if seed_keys else []) + generic + extra
        cells = []
        for runs, head, flat in zip(groups, heads, flats):
            row = [model_label(head.recipe), compression_label(head.recipe)]
            sort: list[Any] = [row[0], compression_value(head.recipe), row[1]]
            if BUDGET_KEY in varying:
                row.append(budget_label(flat.get(BUDGET_KEY)))
                sort.append(value_text(flat.get(BUDGET_KEY)).zfill(12))
            if seed_keys:
                row.append(_seed_label(flat, seed_keys))
            row += [_cell_text(flat, k, sections) for k in generic + extra]
            sort += row[2:]
            column = calibration_label(head.recipe, contrast, show_sources) if uses_calibration(head.recipe) else FILL
            cells.append(Cell(runs, tuple(row), column, tuple(sort)))
        rows: dict[tuple, list[Cell]] = {}
        for cell in cells:
            rows.setdefault(cell.row, []).append(cell)
        for members in rows.values():  # a baseline shares its row with others: give it its own column
            if len(members) > 1:
                for cell in members:
                    if cell.column == FILL:
                        cell.column = calibration_label(cell.runs[0].recipe, contrast, show_sources)
        taken: dict[tuple, int] = {}
        clash: list[str] = []
        clashed = False
        for index, cell in enumerate(cells):
            other = taken.setdefault((cell.row, cell.column), index)
            if other != index:
                clashed, pair = True, (cells[other].runs[0].path, cell.runs[0].path)
                clash += [k for k in _differing([flats[other], flats[index]]) if k not in generic + extra + clash]
        if not clashed:
            break
        if not clash:  # cannot happen: distinct identities differ in some key not yet shown
            raise ReportError(f"runs {pair[0]} and {pair[1]} cannot be told apart")
        extra += clash
    order = {"C4": 0, "prompt": 2}
    columns = sorted({c.column for c in cells if c.column != FILL},
                     key=lambda k: (order.get(k.split(" ")[0], 1 if k.startswith("text") else 3), k))
    cells.sort(key=lambda c: tuple(str(x) if not isinstance(x, float) else f"{x:012.6f}" for x in c.sort_key))
    return Layout(lead, columns or ["RAC"], cells, agg_keys)
