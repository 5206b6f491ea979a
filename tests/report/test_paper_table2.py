"""`rac report --paper table2`: LiveCodeBench pass@1 over 16 samples ± SE, dense rows, C4 / Prompt / RAC."""

from __future__ import annotations

import pytest
from synthetic import C4, DENSE, PAPER_BASE, PROMPT, RAC, code_metrics, merge, write_run

from rac.report.paper import render_paper
from rac.report.runs import ReportError, collect_runs

CODE = {"evaluate": {"tasks": [{"name": "lcb", "type": "code"}]}}


def test_table2_layout_with_dense_rows_and_samples(tmp_path):
    root = tmp_path / "table2_livecodebench"
    write_run(root, "dense", merge(PAPER_BASE, CODE, DENSE), code_metrics(0.374, minutes=100.0))
    for kind, overlay, acc, minutes in (("c4", C4, 0.099, 692.9), ("prompt", PROMPT, 0.228, 1174.8),
                                        ("rac", RAC, 0.283, 381.2)):
        write_run(root, kind, merge(PAPER_BASE, CODE, overlay), code_metrics(acc, minutes=minutes))
    table, _ = render_paper("table2", collect_runs(root), None)
    assert "pass@1 (over 16 samples)" in table.title
    assert [row[:2] for row in table.rows] == [["7B", "Dense"], ["7B", "50%"]]
    assert table.rows[0][2:5] == ["0.374 ± 0.029"] * 3
    assert table.rows[1][2:] == ["0.099 ± 0.018", "0.228 ± 0.025", "0.283 ± 0.027", "692.9", "1174.8", "381.2"]
    assert table.best[1][4] and table.best[1][7] and sum(table.best[1]) == 2
    assert "samples per problem: 16" in table.notes[0]


def test_table2_without_a_code_task_is_a_clear_error(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "dense", merge(PAPER_BASE, DENSE), {})
    with pytest.raises(ReportError, match="Table 2: no run has a finished code evaluation task"):
        render_paper("table2", collect_runs(root), None)
