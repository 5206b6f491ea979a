"""`rac report --paper figure1`: accuracy and evaluation time vs sparsity (dense at 0%), as a PNG and a table."""

from __future__ import annotations

from synthetic import C4, DENSE, PAPER_BASE, math_metrics, merge, write_run

from rac.report.paper import render_paper
from rac.report.paper_figures import figure1_series
from rac.report.runs import collect_runs


def test_figure1_series_png_and_table(tmp_path):
    root = tmp_path / "figure1_c4_sparsity"
    write_run(root, "dense", merge(PAPER_BASE, DENSE), math_metrics(0.936, minutes=23.3))
    for sparsity, acc, minutes in ((0.3, 0.904, 27.4), (0.5, 0.744, 135.0)):
        write_run(root, f"c4_{sparsity}", merge(PAPER_BASE, C4, {"prune": {"sparsity": sparsity}}),
                  math_metrics(acc, minutes=minutes))
    write_run(root, "c4_0.7", merge(PAPER_BASE, C4, {"prune": {"sparsity": 0.7}}), math_metrics(0.1),
              failed_stage="evaluate", stages_before=("evaluate",))
    records = collect_runs(root)
    series, _ = figure1_series(records)
    points = series[("7B", "C4")]
    assert [p[0] for p in points] == [0.0, 30.0, 50.0, 70.0]
    assert [p[1] for p in points] == [0.936, 0.904, 0.744, None]
    assert [round(p[3], 1) if p[3] is not None else None for p in points] == [23.3, 27.4, 135.0, None]
    table, files = render_paper("figure1", records, tmp_path / "out")
    png = tmp_path / "out" / "figure1.png"
    assert png in files and png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    assert table.rows[0] == ["7B", "Dense", "0%", "0.936 ± 0.011", "23.3"]
    assert table.rows[-1] == ["7B", "C4", "70%", "— (evaluate failed)", "— (evaluate failed)"]
