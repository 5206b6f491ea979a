"""The markdown PR comment: per-cell changes grouped, kept under GitHub's comment size."""

from __future__ import annotations

from rac.recipe.diff import ABSENT, RecipeChange
from rac.report import review
from rac.report.review import CellEntry, ReviewEntry, review_markdown, value_text
from rac.workflow.review import Cost


def _grid(n: int, width: int) -> ReviewEntry:
    change = [RecipeChange("calibration.rollout.t_max", 8192, "x" * width)]
    cells = [CellEntry(f"cell{i}", "changed", change, ["rollout"], ["rollout"], Cost(rollout_tokens=1000))
             for i in range(n)]
    return ReviewEntry("g.yaml", "g.yaml", "grid", cells=cells, cost=Cost(rollout_tokens=1000 * n))


def test_cells_with_the_same_changes_share_one_table():
    text = review_markdown([_grid(3, 4)], "a..b")
    assert "**cell0, cell1, cell2**" in text and text.count("`calibration.rollout.t_max`") == 1
    assert "3 changed" in text and "3k rollout tokens" in text


def test_long_comments_drop_the_per_cell_tables(monkeypatch):
    monkeypatch.setattr(review, "MAX_COMMENT", 2000)
    text = review_markdown([_grid(3, 3000)], "a..b")
    assert len(text) < 2000 and "per-cell changes left out" in text and "| `cell2` | changed |" in text


def test_values_in_full_and_absent():
    assert value_text("deepseek-ai/DeepSeek-R1-Distill-Qwen-14B") == '"deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"'
    assert value_text(ABSENT) == "(absent)" and value_text(None) == "null"
