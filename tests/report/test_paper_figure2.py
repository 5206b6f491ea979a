"""`rac report --paper figure2`: the heatmap of r_t = e_t(Prompt) / e_t(RAC) from the probe runs' arrays."""

from __future__ import annotations

import shutil

import numpy as np
from synthetic import C4, PAPER_BASE, PROMPT, RAC, math_metrics, merge, write_run

from rac.report.paper import render_paper
from rac.report.runs import collect_runs


def _runs(tmp_path):
    root = tmp_path / "figure2_probe"
    write_run(root, "prompt", merge(PAPER_BASE, PROMPT), math_metrics(0.8), probe_scale=2.0, seed=3)
    write_run(root, "rac", merge(PAPER_BASE, RAC), math_metrics(0.9), probe_scale=1.0, seed=3)
    write_run(root, "c4", merge(PAPER_BASE, C4), math_metrics(0.7), probe_scale=3.0, seed=3)
    return root


def test_figure2_heatmap_and_ratio_values(tmp_path):
    table, files = render_paper("figure2", collect_runs(_runs(tmp_path)), tmp_path / "out")
    png = tmp_path / "out" / "figure2_7B_50pct.png"
    assert png in files and png.read_bytes()[:4] == b"\x89PNG"
    # same seed, errors scaled 2.0 vs 1.0: r_t = 2 on every prompt and decode token
    assert table.rows == [["7B", "50%", "3", "2.000", "2.000", "100.0%", "figure2_7B_50pct.png"]]
    assert any("left out of Figure 2" in n and "c4" in n for n in table.notes)


def test_figure2_matrix_is_prompt_over_rac(tmp_path):
    from rac.report.plots import error_ratio_matrix

    records = {r.path.name: r for r in collect_runs(_runs(tmp_path))}
    matrix, boundary = error_ratio_matrix(records["prompt"].probe_arrays("probe"), records["rac"].probe_arrays("probe"))
    assert boundary == 7 and matrix.shape == (3, 19)
    assert np.allclose(matrix[np.isfinite(matrix)], 2.0)


def test_figure2_missing_arrays_say_why(tmp_path):
    root = _runs(tmp_path)
    shutil.rmtree(root / "rac" / "artifacts" / "evaluate" / "probe")
    table, files = render_paper("figure2", collect_runs(root), tmp_path / "out")
    assert table.rows[0][2] == "— (RAC: probe arrays gone (evaluate artifact not found))"
    assert not [f for f in files if f.suffix == ".png"]
