"""`rac report --paper table5`: dense / RAC-40% rows, accuracy and run time per budget (32k, 8k, 4k)."""

from __future__ import annotations

from synthetic import DENSE, PAPER_BASE, RAC, math_metrics, merge, write_run

from rac.report.paper import render_paper
from rac.report.runs import collect_runs


def test_table5_budget_columns_largest_first(tmp_path):
    root = tmp_path / "table5_budgets"
    numbers = {("dense", 32768): (0.936, 23.3), ("dense", 8192): (0.904, 10.5), ("dense", 4096): (0.824, 8.4),
               ("rac", 32768): (0.912, 29.1), ("rac", 4096): (0.836, 8.6)}
    for (kind, budget), (acc, minutes) in numbers.items():
        overlays = (DENSE,) if kind == "dense" else (RAC, {"prune": {"sparsity": 0.4}})
        write_run(root, f"{kind}_{budget}", merge(PAPER_BASE, *overlays, {"evaluate": {"max_new_tokens": budget}}),
                  math_metrics(acc, minutes=minutes, budget=budget))
    table, _ = render_paper("table5", collect_runs(root), None)
    assert table.columns == ["Model", "Setting", "Acc. (32k tokens)", "Time min (32k tokens)", "Acc. (8k tokens)",
                             "Time min (8k tokens)", "Acc. (4k tokens)", "Time min (4k tokens)"]
    assert table.rows[0] == ["7B", "Dense", "0.936 ± 0.011", "23.3", "0.904 ± 0.013", "10.5", "0.824 ± 0.017", "8.4"]
    assert table.rows[1] == ["7B", "RAC 40%", "0.912 ± 0.013", "29.1", "— (not run)", "— (not run)",
                             "0.836 ± 0.017", "8.6"]
    assert table.best[0] == [False, False, True, True, False, False, False, True]
    assert table.best[1] == [False, False, False, False, False, False, True, False]
