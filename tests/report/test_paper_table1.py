"""`rac report --paper table1`: the paper's Table 1 layout (rows model x sparsity, dense first; columns
accuracy ± SE and runtime per C4 / Prompt / RAC; best of each row in bold; empty cells say why)."""

from __future__ import annotations

import pytest
from synthetic import C4, DENSE, PAPER_BASE, PROMPT, RAC, math_metrics, merge, write_run

from rac.report.paper import render_paper
from rac.report.runs import ReportError, collect_runs
from rac.report.tables import to_markdown

MODEL_1_5B = {"model": {"id": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"}}


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "table1_math500"
    write_run(root, "7b_dense", merge(PAPER_BASE, DENSE), math_metrics(0.936, minutes=23.3))
    write_run(root, "1.5b_dense", merge(PAPER_BASE, MODEL_1_5B, DENSE), math_metrics(0.832, minutes=22.6))
    for kind, overlay, acc, minutes in (("c4", C4, 0.744, 135.0), ("prompt", PROMPT, 0.812, 115.6),
                                        ("rac", RAC, 0.900, 35.3)):
        write_run(root, f"7b_{kind}_50", merge(PAPER_BASE, overlay), math_metrics(acc, minutes=minutes))
    write_run(root, "7b_rac_30", merge(PAPER_BASE, RAC, {"prune": {"sparsity": 0.3}}), math_metrics(0.934, minutes=25.2))
    write_run(root, "7b_c4_30", merge(PAPER_BASE, C4, {"prune": {"sparsity": 0.3}}), math_metrics(0.9),
              failed_stage="prune", stages_before=("rollout", "hessian", "prune"))
    return root


def test_table1_layout_rows_columns_bold_and_missing_reasons(runs, tmp_path):
    table, files = render_paper("table1", collect_runs(runs), tmp_path / "out")
    assert table.columns == ["Model", "Sparsity", "Accuracy ± SE (C4)", "Accuracy ± SE (Prompt)", "Accuracy ± SE (RAC)",
                             "Runtime min (C4)", "Runtime min (Prompt)", "Runtime min (RAC)"]
    assert [row[:2] for row in table.rows] == [["1.5B", "Dense"], ["1.5B", "30%"], ["1.5B", "50%"],
                                               ["7B", "Dense"], ["7B", "30%"], ["7B", "50%"]]
    dense, s30, s50 = table.rows[3], table.rows[4], table.rows[5]
    assert dense[2:5] == ["0.936 ± 0.011"] * 3 and dense[5:] == ["23.3"] * 3 and not any(table.best[3])
    assert s50[2:] == ["0.744 ± 0.020", "0.812 ± 0.017", "0.900 ± 0.013", "135.0", "115.6", "35.3"]
    assert table.best[5] == [False, False, False, False, True, False, False, True]
    assert s30[2] == "— (prune failed)" and s30[3] == "— (not run)" and s30[5] == "— (prune failed)"
    assert table.rows[1][2:] == ["— (not run)"] * 6  # 1.5B was only run dense
    markdown = (tmp_path / "out" / "paper_table1.md").read_text()
    assert "| 7B | 50% | 0.744 ± 0.020 | 0.812 ± 0.017 | **0.900 ± 0.013** | 135.0 | 115.6 | **35.3** |" in markdown
    assert markdown == to_markdown(table)
    assert (tmp_path / "out" / "paper_table1.csv").read_text().splitlines()[0].startswith("Model,Sparsity,Accuracy")
    assert [f.name for f in files] == ["paper_table1.md", "paper_table1.csv"]


def test_two_runs_in_one_table1_cell_are_an_error_naming_both(runs):
    write_run(runs, "7b_rac_50_budget", merge(PAPER_BASE, RAC, {"evaluate": {"max_new_tokens": 8192}}),
              math_metrics(0.8))
    with pytest.raises(ReportError, match=r"7b_rac_50.*7b_rac_50_budget.*evaluate.max_new_tokens"):
        render_paper("table1", collect_runs(runs), None)


def test_runs_without_a_table1_cell_are_listed_not_dropped(runs):
    write_run(runs, "7b_rac_24", merge(PAPER_BASE, RAC, {"prune": {"pattern": "2:4"}}), math_metrics(0.8))
    table, _ = render_paper("table1", collect_runs(runs), None)
    assert any("left out of Table 1" in n and "7b_rac_24" in n and "2:4" in n for n in table.notes)
