"""Paper-shaped tables (1, 3, 4, 5) from synthetic run directories: every run its own cell."""

from __future__ import annotations

import pytest
from synthetic import (
    C4,
    DENSE,
    FP8,
    MLP24_ALL,
    MLP24_FIRST,
    MLP24_FIRST_LAST,
    MODEL_14B,
    OFF_POLICY_14B,
    PAPER_BASE,
    PROMPT,
    RAC,
    math_metrics,
    merge,
    throughput_metrics,
    write_run,
)

from rac.report.tables import ReportError, collect_runs, table_one, to_csv, to_markdown


def _cells(table) -> dict[tuple[str, ...], dict[str, str]]:
    """(row labels) -> {column: cell}; fails if a row label repeats (a merged or hidden run)."""
    out: dict[tuple[str, ...], dict[str, str]] = {}
    for row in table.rows:
        key = tuple(row[:table.lead])
        assert key not in out, f"row {key} appears twice"
        out[key] = dict(zip(table.columns[table.lead:], row[table.lead:]))
    return out


def _count_accuracy_cells(table, records) -> int:
    """How many distinct runs' accuracies the table shows (each run's value is unique in these tests)."""
    shown = {c for row in table.rows for c in row[table.lead:]}
    return sum(any(c.startswith(f"{r.evaluate['math500']['accuracy']:.3f}") for c in shown) for r in records)


def test_table1_rows_sparsity_columns_calibration(table1_dir):
    records = collect_runs(table1_dir)
    table = table_one(records)
    assert table.columns[:2] == ["model", "compression"]
    assert table.kinds == ["C4", "prompt", "RAC"]  # hf:allenai/c4 is C4, not "text"
    cells = _cells(table)
    assert list(cells) == [("DeepSeek-R1-Distill-Qwen-7B", "dense"), ("DeepSeek-R1-Distill-Qwen-7B", "30%"),
                           ("DeepSeek-R1-Distill-Qwen-7B", "50%")]
    dense = cells[("DeepSeek-R1-Distill-Qwen-7B", "dense")]
    assert dense["acc (C4)"] == dense["acc (prompt)"] == dense["acc (RAC)"] == "0.936 ± 0.011"
    fifty = cells[("DeepSeek-R1-Distill-Qwen-7B", "50%")]
    assert fifty["acc (C4)"].startswith("0.740") and fifty["acc (RAC)"].startswith("0.900")
    row = next(r for r, b in zip(table.rows, table.best) if r[1] == "50%")
    flags = dict(zip(table.columns, table.best[table.rows.index(row)]))
    assert flags["acc (RAC)"] and not flags["acc (C4)"] and flags["dec NLL (RAC)"]


def test_table3_on_and_off_policy_are_separate_columns(tmp_path):
    root = tmp_path / "table3"
    for sparsity, on, off in ((0.3, 0.91, 0.905), (0.5, 0.900, 0.876)):
        prune = {"prune": {"sparsity": sparsity}}
        write_run(root, f"on_{sparsity}", merge(PAPER_BASE, RAC, prune), math_metrics(on))
        write_run(root, f"off_{sparsity}", merge(PAPER_BASE, OFF_POLICY_14B, prune), math_metrics(off))
    records = collect_runs(root)
    table = table_one(records)
    assert table.kinds == ["RAC off-policy (DeepSeek-R1-Distill-Qwen-14B)", "RAC on-policy"]
    cells = _cells(table)
    fifty = cells[("DeepSeek-R1-Distill-Qwen-7B", "50%")]
    assert fifty["acc (RAC on-policy)"].startswith("0.900")
    assert fifty["acc (RAC off-policy (DeepSeek-R1-Distill-Qwen-14B))"].startswith("0.876")
    assert _count_accuracy_cells(table, records) == 4


def test_table4_scopes_and_fp8_are_separate_rows(tmp_path):
    root = tmp_path / "table4"
    scopes = {"first": MLP24_FIRST, "firstlast": MLP24_FIRST_LAST, "all": MLP24_ALL}
    acc = {("first", "prompt", False): 0.901, ("first", "rac", False): 0.931, ("firstlast", "prompt", False): 0.902,
           ("firstlast", "rac", False): 0.932, ("all", "prompt", False): 0.853, ("all", "rac", False): 0.883,
           ("firstlast", "rac", True): 0.940, ("firstlast", "prompt", True): 0.904}
    for (scope, kind, fp8), value in acc.items():
        recipe = merge(PAPER_BASE, MODEL_14B, scopes[scope], PROMPT if kind == "prompt" else RAC, FP8 if fp8 else {})
        write_run(root, f"{scope}_{kind}_{fp8}", recipe, {**math_metrics(value), **throughput_metrics(1500 + 100 * fp8)})
    records = collect_runs(root)
    table = table_one(records)
    cells = _cells(table)
    model = "DeepSeek-R1-Distill-Qwen-14B"
    assert set(cells) == {(model, "2:4 MLP first third"), (model, "2:4 MLP first+last third"),
                          (model, "2:4 MLP all blocks"), (model, "2:4 MLP first+last third + FP8")}
    assert table.kinds == ["prompt", "RAC"]
    assert cells[(model, "2:4 MLP first+last third + FP8")]["acc (RAC)"].startswith("0.940")
    assert cells[(model, "2:4 MLP first+last third + FP8")]["acc (prompt)"].startswith("0.904")
    assert cells[(model, "2:4 MLP first+last third + FP8")]["tok/s (RAC)"] == "1600"
    assert "export.format" not in table.columns  # FP8's export format is part of "+ FP8", not noise
    assert _count_accuracy_cells(table, records) == 8


def test_table5_budgets_are_separate_rows(tmp_path):
    root = tmp_path / "table5"
    numbers = {(False, 32768): (0.936, 23.3), (False, 8192): (0.904, 10.5), (False, 4096): (0.824, 8.4),
               (True, 32768): (0.912, 29.1), (True, 8192): (0.898, 10.4), (True, 4096): (0.836, 8.6)}
    for (pruned, budget), (acc, minutes) in numbers.items():
        recipe = merge(PAPER_BASE, RAC if pruned else DENSE, {"prune": {"sparsity": 0.4}} if pruned else {},
                       {"evaluate": {"max_new_tokens": budget}})
        write_run(root, f"{'rac' if pruned else 'dense'}_{budget}", recipe, math_metrics(acc, minutes, budget=budget))
    records = collect_runs(root)
    table = table_one(records)
    assert table.columns[:3] == ["model", "compression", "budget"]
    cells = _cells(table)
    model = "DeepSeek-R1-Distill-Qwen-7B"
    assert [k[1:] for k in cells] == [("dense", "4k tokens"), ("dense", "8k tokens"), ("dense", "32k tokens"),
                                      ("40%", "4k tokens"), ("40%", "8k tokens"), ("40%", "32k tokens")]
    assert cells[(model, "40%", "32k tokens")]["min (RAC)"] == "29.1"
    assert cells[(model, "dense", "8k tokens")]["acc (RAC)"].startswith("0.904")
    assert _count_accuracy_cells(table, records) == 6


def test_two_runs_in_one_cell_are_an_error_naming_both(table1_dir):
    write_run(table1_dir, "rac_50_again", merge(PAPER_BASE, RAC, {"name": "again", "run": {"output_dir": "elsewhere"}}),
              math_metrics(0.5))
    with pytest.raises(ReportError) as caught:
        table_one(collect_runs(table1_dir))
    message = str(caught.value)
    assert str(table1_dir / "rac_50") in message and str(table1_dir / "rac_50_again") in message
    assert "--aggregate" in message


def test_seeds_are_separate_rows_unless_aggregated(tmp_path):
    root = tmp_path / "seeds"
    for seed, acc in ((0, 0.80), (1, 0.84), (2, 0.88)):
        write_run(root, f"rac_s{seed}", merge(PAPER_BASE, RAC, {"run": {"seed": seed}}), math_metrics(acc))
    write_run(root, "prompt_s0", merge(PAPER_BASE, PROMPT, {"run": {"seed": 0}}), math_metrics(0.70))
    records = collect_runs(root)
    table = table_one(records)
    assert table.columns[:3] == ["model", "compression", "seed"]
    assert [row[2] for row in table.rows] == ["seed 0", "seed 1", "seed 2"]

    pooled = table_one(records, aggregate=["seed"])
    assert len(pooled.rows) == 1 and "seed" not in pooled.columns
    cells = dict(zip(pooled.columns, pooled.rows[0]))
    assert cells["acc (RAC)"] == "0.840 ± 0.023 (n=3)"  # mean ± SE over the three seeds
    assert cells["acc (prompt)"].startswith("0.700 ± ")
    assert any("run.seed" in note for note in pooled.notes)


def test_aggregate_rejects_duplicates_and_unknown_keys(tmp_path):
    root = tmp_path / "dup"
    write_run(root, "a", merge(PAPER_BASE, {"run": {"seed": 1}}), math_metrics(0.8))
    write_run(root, "b", merge(PAPER_BASE, {"run": {"seed": 1}, "name": "b"}), math_metrics(0.9))
    records = collect_runs(root)
    with pytest.raises(ReportError, match="differ in none of the aggregated keys"):
        table_one(records, aggregate=["seed"])
    with pytest.raises(ReportError, match="--aggregate nosuch.key"):
        table_one(records, aggregate=["nosuch.key"])


def test_failed_later_stage_shows_measured_numbers_and_the_failure(table1_dir):
    write_run(table1_dir, "rac_40", merge(PAPER_BASE, RAC, {"prune": {"sparsity": 0.4}}), math_metrics(0.877),
              failed_stage="export")
    table = table_one(collect_runs(table1_dir))
    cells = _cells(table)[("DeepSeek-R1-Distill-Qwen-7B", "40%")]
    assert cells["acc (RAC)"].startswith("0.877")
    assert cells["status (RAC)"] == "export failed"
    assert _cells(table)[("DeepSeek-R1-Distill-Qwen-7B", "50%")]["status (RAC)"] == "ok"
    assert any("rac_40" in note and "No space left" in note for note in table.notes)


def test_run_without_metrics_json_is_read_from_status(table1_dir):
    """A run killed in export before metrics were kept: its cached evaluation still shows."""
    run = write_run(table1_dir, "rac_40", merge(PAPER_BASE, RAC, {"prune": {"sparsity": 0.4}}), math_metrics(0.877),
                    failed_stage="export")
    (run / "metrics.json").unlink()
    table = table_one(collect_runs(table1_dir))
    cells = _cells(table)[("DeepSeek-R1-Distill-Qwen-7B", "40%")]
    assert cells["acc (RAC)"].startswith("0.877") and cells["status (RAC)"] == "export failed"


def test_other_differing_keys_become_labelled_rows(tmp_path):
    root = tmp_path / "tmax"
    for t_max, acc in ((4096, 0.85), (8192, 0.9)):
        write_run(root, f"t{t_max}", merge(PAPER_BASE, {"calibration": {"rollout": {"t_max": t_max}}}), math_metrics(acc))
    table = table_one(collect_runs(root))
    assert "calibration.rollout.t_max" in table.columns
    assert sorted(row[table.columns.index("calibration.rollout.t_max")] for row in table.rows) == ["4096", "8192"]


def test_same_labels_different_recipes_get_the_telling_key(tmp_path):
    """Two sparsities that print alike (50.01% vs 50%) are told apart, never merged."""
    root = tmp_path / "alike"
    write_run(root, "a", merge(PAPER_BASE, {"prune": {"sparsity": 0.5}}), math_metrics(0.8))
    write_run(root, "b", merge(PAPER_BASE, {"prune": {"sparsity": 0.50001}}), math_metrics(0.7))
    table = table_one(collect_runs(root))
    assert len(table.rows) == 2 and "prune.sparsity" in table.columns


def test_markdown_and_csv(table1_dir):
    table = table_one(collect_runs(table1_dir))
    md = to_markdown(table)
    assert "**0.900 ± 0.013**" in md and md.count("\n|") >= 4
    csv_text = to_csv(table)
    assert csv_text.splitlines()[0].startswith("model,compression,acc (C4)")
    assert len(csv_text.splitlines()) == 4


def test_missing_runs_are_a_clear_error(tmp_path):
    with pytest.raises(ReportError, match="no run directories"):
        collect_runs(tmp_path)
    with pytest.raises(ReportError, match="no such"):
        collect_runs(tmp_path / "nope")


def test_c4_label_for_builtin_and_hub_sources(tmp_path):
    root = tmp_path / "c4"
    write_run(root, "hub", merge(PAPER_BASE, C4), math_metrics(0.7))
    table = table_one(collect_runs(root))
    assert table.kinds == ["C4"]


def test_report_cli_collision_is_a_clean_error_naming_both(table1_dir, capsys):
    from rac.cli import main

    write_run(table1_dir, "prompt_30_copy", merge(PAPER_BASE, PROMPT, {"prune": {"sparsity": 0.3}, "name": "copy"}),
              math_metrics(0.1))
    assert main(["report", str(table1_dir)]) == 2
    err = capsys.readouterr().err
    assert "prompt_30 " in err.replace("\n", " ") and "prompt_30_copy" in err
    assert not (table1_dir / "report").exists()
