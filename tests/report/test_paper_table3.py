"""`rac report --paper table3`: on-policy vs off-policy RAC (the rollout model named), accuracy ± SE."""

from __future__ import annotations

from synthetic import C4, OFF_POLICY_14B, PAPER_BASE, RAC, math_metrics, merge, write_run

from rac.report.paper import render_paper
from rac.report.runs import collect_runs


def test_table3_on_and_off_policy_columns(tmp_path):
    root = tmp_path / "table3_offpolicy"
    for sparsity, on, off in ((0.2, 0.934, 0.930), (0.5, 0.900, 0.876)):
        write_run(root, f"on_{sparsity}", merge(PAPER_BASE, RAC, {"prune": {"sparsity": sparsity}}), math_metrics(on))
        if sparsity == 0.5:
            write_run(root, f"off_{sparsity}", merge(PAPER_BASE, OFF_POLICY_14B, {"prune": {"sparsity": sparsity}}),
                      math_metrics(off))
    write_run(root, "c4", merge(PAPER_BASE, C4), math_metrics(0.7))
    table, _ = render_paper("table3", collect_runs(root), None)
    assert table.columns == ["Model", "Sparsity", "On-policy", "Off-policy (14B traces)"]
    assert table.rows == [["7B", "20%", "0.934 ± 0.011", "— (not run)"],
                          ["7B", "50%", "0.900 ± 0.013", "0.876 ± 0.015"]]
    assert table.best == [[False, False, False, False], [False, False, True, False]]
    assert any("left out of Table 3" in n and n.endswith("(not RAC-calibrated)") for n in table.notes)
