"""A recipe review: comparisons with their invalidated stages and re-run cost, and its markdown
rendering (the PR comment posted by ``rac diff --format md`` / the recipes workflow)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from rac.recipe.compare import Comparison
from rac.recipe.diff import ABSENT, RecipeChange, diff_recipes
from rac.workflow.review import DECODE_TOK_S_7B, Cost, impact, rerun_cost, stage_names, stage_signature


@dataclass
class CellEntry:
    """One added, removed or changed grid cell."""

    name: str
    status: str
    changes: list[RecipeChange]
    invalidated: list[str]
    rerun: list[str]
    cost: Cost
    nearest: str = ""  # the old cell whose cached artifacts it reuses most


@dataclass
class ReviewEntry:
    """One compared pair of files: its changes, stages and cost (grids: per cell)."""

    old: str
    new: str
    kind: str
    changes: list[RecipeChange] = field(default_factory=list)
    invalidated: list[str] = field(default_factory=list)
    rerun: list[str] = field(default_factory=list)
    cells: list[CellEntry] = field(default_factory=list)
    unchanged_cells: int = 0
    cost: Cost = field(default_factory=Cost)
    status: str = "changed"  # "added" / "removed": a whole file (its keys are not listed)

    @property
    def title(self) -> str:
        return self.new if self.old == self.new or not self.old else f"{self.old} → {self.new}"


def review_entry(comparison: Comparison) -> ReviewEntry:
    """Attach stages and costs to a comparison."""
    kind = comparison.b.kind if comparison.b.kind == comparison.a.kind else f"{comparison.a.kind} → {comparison.b.kind}"
    entry = ReviewEntry(comparison.a.label if comparison.a.path else "", comparison.b.label if comparison.b.path
                        else "", kind, list(comparison.changes) if comparison.status == "changed" else [],
                        unchanged_cells=comparison.unchanged_cells, status=comparison.status)
    if comparison.new is not None or comparison.old is not None:
        hit = impact(comparison.old, comparison.new, comparison.changes)
        entry.invalidated, entry.rerun = hit.invalidated, hit.rerun
        if comparison.new is not None:
            entry.cost = rerun_cost(comparison.new, hit.rerun)
    old_cells = list(comparison.a.cells.items())
    shared: set[str] = set()
    for cell in comparison.cells:
        if cell.new is None:
            hit = impact(cell.old, None, cell.changes)
            entry.cells.append(CellEntry(cell.name, cell.status, cell.changes, hit.invalidated, [], Cost()))
            continue
        hit, nearest = _nearest(old_cells, cell.new)
        cost = rerun_cost(cell.new, hit.rerun)
        if "rollout" in hit.rerun:  # cells with the same rollout inputs share one rollout artifact
            key = stage_signature(cell.new, "rollout")
            if key in shared:
                cost = rerun_cost(cell.new, [s for s in hit.rerun if s != "rollout"])
            shared.add(key)
        entry.cells.append(CellEntry(cell.name, cell.status, cell.changes, hit.invalidated, hit.rerun, cost, nearest))
        entry.cost = entry.cost + cost
    return entry


def _nearest(old_cells: Sequence[tuple[str, dict]], new: dict) -> tuple[Any, str]:
    """The impact of running ``new`` next to the old grid's cached cells: the old cell that leaves
    the fewest stages to run (an added cell often reuses another cell's rollouts and Hessians)."""
    best, name, rank = impact(None, new, []), "", (len(stage_names()) + 1, 0)
    for old_name, old in old_cells:
        changes = diff_recipes(old, new)
        hit = impact(old, new, changes)
        if (len(hit.rerun), len(changes)) < rank:
            best, name, rank = hit, old_name, (len(hit.rerun), len(changes))
    return best, name


def value_text(value: Any) -> str:
    """A value in full, JSON-style (strings quoted, so ``"1"`` and ``1`` differ)."""
    if value is ABSENT:
        return "(absent)"
    return json.dumps(value, default=str, ensure_ascii=False)


def _num(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def cost_text(cost: Cost) -> str:
    parts = []
    if cost.rollout_tokens is not None:
        parts.append(f"{_num(cost.rollout_tokens)} rollout tokens")
    if cost.eval_tokens is not None:
        parts.append(f"≤ {_num(cost.eval_tokens)} evaluation tokens")
    if cost.gpu_hours is not None:
        parts.append(f"~{cost.gpu_hours:.3g} GPU-hours")
    if cost.unknown:
        parts.append("not estimable: " + ", ".join(cost.unknown))
    return "; ".join(parts) or "no generation"


def _cell(text: str) -> str:
    return "`" + text.replace("|", "\\|").replace("`", "'") + "`"


def _changes_table(changes: Sequence[RecipeChange]) -> list[str]:
    lines = ["| key | old | new |", "|---|---|---|"]
    lines += [f"| {_cell(c.path)} | {_cell(value_text(c.old))} | {_cell(value_text(c.new))} |" for c in changes]
    return lines


def _entry_md(entry: ReviewEntry, details: bool = True) -> list[str]:
    status = "" if entry.status == "changed" else f", {entry.status}"
    lines = [f"#### `{entry.title}` ({entry.kind}{status})", ""]
    if entry.changes:
        lines += _changes_table(entry.changes) + [""]
    if entry.invalidated or entry.rerun:
        lines.append(f"Stages invalidated: **{', '.join(entry.invalidated) or 'none'}**; re-run: "
                     f"{', '.join(entry.rerun) or 'none'} ({cost_text(entry.cost)}).")
        lines.append("")
    if entry.cells or entry.unchanged_cells:
        counts = {s: sum(1 for c in entry.cells if c.status == s) for s in ("added", "removed", "changed")}
        lines.append(f"Grid cells: {counts['added']} added, {counts['removed']} removed, {counts['changed']} "
                     f"changed, {entry.unchanged_cells} unchanged; cells to run: {cost_text(entry.cost)}.")
        lines += ["", "| cell | status | stages to run | estimated cost |", "|---|---|---|---|"]
        for cell in entry.cells:
            stages = ", ".join(cell.rerun) or ("-" if cell.status == "removed" else "none")
            stages += f" (reuses {cell.nearest})" if cell.nearest and cell.nearest != cell.name else ""
            cost = cost_text(cell.cost) if cell.status != "removed" else "-"
            lines.append(f"| {_cell(cell.name)} | {cell.status} | {stages} | {cost} |")
        changed = [c for c in entry.cells if c.changes]
        if changed and details:
            groups: dict[str, tuple[list[str], list[RecipeChange]]] = {}
            for cell in changed:  # cells with the same changes share one table
                key = repr([(c.path, value_text(c.old), value_text(c.new)) for c in cell.changes])
                groups.setdefault(key, ([], cell.changes))[0].append(cell.name)
            lines += ["", "<details><summary>changes per cell</summary>", ""]
            for names, changes in groups.values():
                lines += [f"**{', '.join(names)}**", ""] + _changes_table(changes) + [""]
            lines += ["</details>"]
        lines.append("")
    return lines


MAX_COMMENT = 60_000  # GitHub rejects comments over 65,536 characters


def review_markdown(entries: Sequence[ReviewEntry], title: str, errors: Sequence[str] = (),
                    notes: Sequence[str] = ()) -> str:
    """The PR comment: a summary line, then per file its changes, stages, cells and cost.

    Over ``MAX_COMMENT`` characters the per-cell change tables are left out (the cell table stays).
    """
    text = _markdown(entries, title, errors, notes, details=True)
    if len(text) > MAX_COMMENT:
        text = _markdown(entries, title, errors, [*notes, "per-cell changes left out to fit a comment; run "
                                                  "`rac diff --git` locally for them"], details=False)
    return text


def _markdown(entries: Sequence[ReviewEntry], title: str, errors: Sequence[str], notes: Sequence[str],
              details: bool) -> str:
    total = Cost()
    for entry in entries:
        total = total + entry.cost
    lines = [f"### rac recipe review: {title}", ""]
    if errors:
        lines += ["**Invalid recipes** (fix these first):", "", "```"] + list(errors) + ["```", ""]
    if not entries:
        lines.append("No recipe, overlay or grid resolves differently.")
    else:
        lines.append(f"{len(entries)} file(s) resolve differently. Estimated cost of what must re-run: "
                     f"{cost_text(total)}.")
        lines.append("")
        for entry in entries:
            lines += _entry_md(entry, details)
    lines += [f"- {note}" for note in notes]
    lines.append(f"<sub>Estimates: rollout tokens from `calibration.budget`; evaluation tokens are an upper bound "
                 f"(items x samples x max_new_tokens); GPU-hours assume {DECODE_TOK_S_7B:,.0f} generated tokens/s "
                 "per GPU for a 7B model, scaled by model size (see rac/workflow/review.py).</sub>")
    return "\n".join(lines) + "\n"
