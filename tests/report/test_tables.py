"""Table 1 from synthetic run directories."""

from __future__ import annotations

import pytest

from rac.report.tables import ReportError, collect_runs, table_one, to_csv, to_markdown


def test_collect_runs_reads_every_cell(grid_dir):
    runs = collect_runs(grid_dir)
    assert len(runs) == 7
    assert [r.sparsity for r in runs[:1]] == ["dense"]
    assert {r.calibration for r in runs} == {"c4", "prompt", "rac"}
    assert collect_runs(runs[0].path)[0].path == runs[0].path


def test_table_one_layout_and_best_flags(grid_dir):
    table = table_one(collect_runs(grid_dir))
    assert table.columns[:5] == ["model", "sparsity", "acc c4", "acc prompt", "acc rac"]
    assert "dec NLL rac" in table.columns and "len c4" in table.columns and "prm err prompt" in table.columns
    rows = {row[1]: (row, best) for row, best in zip(table.rows, table.best)}
    assert list(rows) == ["dense", "30%", "50%"]
    dense_row, dense_best = rows["dense"]
    assert dense_row[2] == dense_row[3] == dense_row[4] == "0.400 ± 0.069"  # baseline fills every column
    assert not any(dense_best)
    row, best = rows["50%"]
    acc_rac = table.columns.index("acc rac")
    assert row[acc_rac] == "0.300 ± 0.065" and best[acc_rac]
    assert not best[table.columns.index("acc c4")]
    assert best[table.columns.index("min rac")]  # fastest
    assert best[table.columns.index("dec NLL rac")] and not best[table.columns.index("dec NLL c4")]
    assert not any(best[table.columns.index(f"len {k}")] for k in ("c4", "prompt", "rac"))


def test_markdown_and_csv(grid_dir):
    table = table_one(collect_runs(grid_dir))
    md = to_markdown(table)
    assert "**0.300 ± 0.065**" in md and md.count("\n|") >= 4
    csv_text = to_csv(table)
    assert csv_text.splitlines()[0].startswith("model,sparsity,acc c4")
    assert len(csv_text.splitlines()) == 4


def test_missing_runs_are_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="no run directories"):
        collect_runs(tmp_path)
    with pytest.raises(ReportError, match="no such"):
        collect_runs(tmp_path / "nope")
