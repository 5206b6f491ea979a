"""`rac report --paper NAME`: the layout names, detection from the grid directory's name (an explicit
flag wins), and an unknown name as a clean usage error with a "did you mean"."""

from __future__ import annotations

import pytest
from synthetic import DENSE, PAPER_BASE, RAC, math_metrics, merge, write_run

from rac.errors import UsageError
from rac.report.paper import detect_layout, paper_layout
from rac.report.runs import collect_runs


def _budgets(root):
    for budget in (32768, 4096):
        write_run(root, f"dense_{budget}", merge(PAPER_BASE, DENSE, {"evaluate": {"max_new_tokens": budget}}),
                  math_metrics(0.9, budget=budget))
        write_run(root, f"rac_{budget}", merge(PAPER_BASE, RAC, {"evaluate": {"max_new_tokens": budget}}),
                  math_metrics(0.8, budget=budget))
    return root


def test_unknown_layout_suggests_the_closest():
    with pytest.raises(UsageError, match=r"--paper tabel1: unknown layout \(did you mean 'table1'\?\)"):
        paper_layout("tabel1")
    assert paper_layout("Figure2") == "figure2"


def test_layout_is_detected_from_the_grid_directory_name(tmp_path):
    root = _budgets(tmp_path / "runs" / "table5_budgets")
    assert detect_layout(root, collect_runs(root)) == "table5"
    assert detect_layout(tmp_path / "runs", collect_runs(tmp_path / "runs")) == "table5"
    write_run(tmp_path / "runs" / "figure1_c4_sparsity", "dense", merge(PAPER_BASE, DENSE), math_metrics(0.9))
    assert detect_layout(tmp_path / "runs", collect_runs(tmp_path / "runs")) is None  # two grids: no guess


def test_cli_renders_the_detected_layout_and_the_flag_wins(tmp_path, capsys):
    from rac.cli import main

    root = _budgets(tmp_path / "table5_budgets")
    assert main(["report", str(root)]) == 0
    assert (root / "report" / "paper_table5.md").is_file() and (root / "report" / "table.md").is_file()
    assert main(["report", str(root), "--paper", "table1", "--out", str(tmp_path / "t1")]) == 2  # two budgets collide
    assert "would share one Table 1 cell" in capsys.readouterr().err
    assert main(["report", str(root), "--paper", "tabel5"]) == 2
    assert "did you mean 'table5'" in capsys.readouterr().err


def test_a_directory_of_several_grids_reads_only_the_layouts_grids(tmp_path):
    """Table 5's dense 32k cell is the same experiment as Table 1's dense 7B cell: without selecting the
    grid directories, `rac report runs/paper --paper table5` would be a collision error."""
    from rac.report.paper import render_paper

    root = tmp_path / "paper"
    _budgets(root / "table5_budgets")
    write_run(root / "table1_dense", "7b_dense", merge(PAPER_BASE, DENSE), math_metrics(0.9))
    write_run(root / "figure1_c4_sparsity", "c4_30", merge(PAPER_BASE, {"prune": {"sparsity": 0.3}}), math_metrics(0.8))
    records = collect_runs(root)
    table, _ = render_paper("table5", records, None, root=root)
    assert [row[:2] for row in table.rows] == [["7B", "Dense"], ["7B", "RAC 50%"]]
    assert "read the 4 runs under" in table.notes[-1] and "2 other runs not read" in table.notes[-1]
    figure, _ = render_paper("figure1", records, None, root=root)
    assert [row[:3] for row in figure.rows] == [["7B", "Dense", "0%"], ["7B", "RAC", "30%"]]
