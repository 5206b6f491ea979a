"""Length in reports (issue 18 item 1): per cell mean tokens, ratio to the dense run on the same problems,
budget hits, EOS / end-of-reasoning rate, loop share, accuracy, decode NLL, stage seconds; plots; and the
length columns of the default table and the grid headline."""

from __future__ import annotations

import pytest
from synthetic import DENSE, PAPER_BASE, PROMPT, RAC, length_block, math_metrics, merge, sample_records, write_run

from rac.report import metric_keys as mk
from rac.report.paper import render_paper
from rac.report.runs import collect_runs
from rac.report.tables import table_one


def _metrics(acc: float, mean: float, hit: float) -> dict:
    metrics = math_metrics(acc, length=mean)
    metrics["math500"]["length"] = length_block(mean, hit)
    return metrics


@pytest.fixture()
def runs(tmp_path):
    root = tmp_path / "length"
    write_run(root, "dense", merge(PAPER_BASE, DENSE), _metrics(0.9, 200.0, 0.1), probe_scale=0.0,
              samples={"math500": sample_records([100, 200, 300])})
    # RAC evaluated one extra problem (p3): the ratio pairs only p0..p2 -> (150 + 300 + 450) / 600
    write_run(root, "rac", merge(PAPER_BASE, RAC), _metrics(0.8, 400.0, 0.5), probe_scale=1.0,
              samples={"math500": sample_records([150, 300, 450, 700])})
    write_run(root, "prompt", merge(PAPER_BASE, PROMPT), _metrics(0.7, 300.0, 0.4), probe_scale=2.0)
    return root


def test_length_table_columns_ratio_and_reasons(runs, tmp_path):
    table, files = render_paper("length", collect_runs(runs), tmp_path / "out")
    assert table.columns == ["model", "compression", "calibration", "accuracy", "mean tokens", "length / dense",
                             "budget hit %", "EOS %", "end of reasoning %", "loop share %", "decode NLL",
                             "prune s", "total s"]
    rows = {row[2]: row for row in table.rows}
    assert rows["RAC"][3:] == ["0.800", "400.0", "1.50", "50.0", "90.0", "95.0", "5.0", "1.000", "12.5", "62.5"]
    assert rows["prompt"][5] == "— (records/math500.jsonl gone (this run))"
    assert rows["–"][5] == "1.00" and rows["–"][11] == "— (no prune stage)"
    assert {f.name for f in files} >= {"length_vs_accuracy.png", "length_vs_sparsity.png", "paper_length.md"}


def test_default_table_and_headline_show_length_ratio_and_budget_hits(runs):
    records = collect_runs(runs)
    table = table_one(records)
    assert "len/dense (RAC)" in table.columns and "budget hit (prompt)" in table.columns
    row = table.rows[1]
    assert row[table.columns.index("len/dense (RAC)")] == "1.50"
    assert row[table.columns.index("len/dense (prompt)")] == "–"
    assert row[table.columns.index("budget hit (prompt)")] == "0.40"
    rac = next(r for r in records if r.path.name == "rac")
    assert mk.headline(rac.evaluate["math500"])["length_ratio"] == 1.5
    assert mk.headline(rac.evaluate["math500"])["budget_hit_rate"] == 0.5


def test_grid_summary_rows_get_the_length_ratio(runs):
    from rac.report.length import summary_length_ratios

    rows = [{"cell": name, "run_dir": str(runs / name)} for name in ("dense", "rac", "prompt")] + [{"cell": "gone"}]
    summary_length_ratios(rows)
    assert [row.get("math500.length_ratio") for row in rows] == [1.0, 1.5, None, None]


def test_a_section_set_in_one_cell_is_one_on_off_column(tmp_path):
    """A lever that is a whole section (``recover``) set in one cell only reads as one "recover" column
    (on / off), not one column per key of the section; keys that differ among cells that set the section
    stay columns of their own."""
    root = tmp_path / "levers"
    recover = {"recover": {"tokens": 4096, "lr": 0.0001, "seed": 0, "batch_size": 4}}
    write_run(root, "dense", merge(PAPER_BASE, DENSE), _metrics(0.9, 200.0, 0.1), probe_scale=0.0)
    write_run(root, "rac", merge(PAPER_BASE, RAC), _metrics(0.8, 400.0, 0.5), probe_scale=1.0)
    write_run(root, "recover", merge(PAPER_BASE, RAC, recover), _metrics(0.8, 300.0, 0.3), probe_scale=0.5)
    table, _ = render_paper("length", collect_runs(root), tmp_path / "out")
    assert "recover" in table.columns and not [c for c in table.columns if c.startswith("recover.")]
    assert "seed" not in table.columns  # recover.seed only exists where recover is on
    on = table.columns.index("recover")
    assert sorted(row[on] for row in table.rows) == ["off", "off", "on"]
    write_run(root, "recover-long", merge(PAPER_BASE, RAC, recover, {"recover": {"tokens": 16384}}),
              _metrics(0.8, 250.0, 0.2), probe_scale=0.4)
    table, _ = render_paper("length", collect_runs(root), tmp_path / "out2")
    assert "recover.tokens" in table.columns and "recover.lr" not in table.columns
    tokens = table.columns.index("recover.tokens")
    assert sorted(row[tokens] for row in table.rows) == ["16384", "4096", "–", "–"]
