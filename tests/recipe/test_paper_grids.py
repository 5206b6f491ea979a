"""Every table and figure of the paper has a grid whose dry run lists exactly the paper's cells.

Each grid is expanded and validated as ``rac grid --dry-run`` does (no environment checks), then its
cells' recipe names are compared with the paper's rows x columns, so a grid that loses a condition,
gains one, or names cells so that a reader cannot tell which table entry they fill, fails here.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rac.recipe.grid import expand_grid

ROOT = Path(__file__).resolve().parents[2]
GRIDS = ROOT / "recipes" / "grids"
MODELS = {m: f"deepseek-r1-distill-qwen-{m}" for m in ("1.5b", "7b", "14b", "32b")}
SPARSITIES = (20, 30, 40, 50)


def _table(models: tuple[str, ...], calibrations: tuple[str, ...], sparsities: tuple[int, ...]) -> set[str]:
    return {f"{MODELS[m]}_{c}_sparsegpt{s}" for m in models for c in calibrations for s in sparsities}


_T4 = "deepseek-r1-distill-qwen-14b"
_SCOPES = {"first": "mlp-first-2of4", "first_last": "mlp-first-2of4+mlp-last-2of4", "all": "mlp-all-2of4"}
PAPER_CELLS: dict[str, set[str]] = {
    "figure1_c4_sparsity.yaml": _table(("7b",), ("c4",), (30, 50, 70)),
    "figure2_probe.yaml": _table(("7b",), ("prompt", "rac"), (50,)),
    "table1_math500.yaml": _table(("1.5b", "7b", "14b", "32b"), ("c4", "prompt", "rac"), SPARSITIES),
    "table1_dense.yaml": {f"{MODELS[m]}_dense" for m in ("1.5b", "7b", "14b", "32b")},
    "table2_livecodebench.yaml": _table(("1.5b", "7b", "14b"), ("c4", "prompt", "rac"), SPARSITIES),
    "table2_dense.yaml": {f"{MODELS[m]}_dense" for m in ("1.5b", "7b", "14b")},
    "table3_offpolicy.yaml": _table(("7b",), ("rac", f"rac-from-{MODELS['14b']}"), SPARSITIES),
    "table4_2of4_fp8.yaml": {f"{_T4}_dense"} | {
        f"{_T4}_{cal}_sparsegpt_{scope}{'_fp8' if fp8 else ''}"
        for scope in _SCOPES.values() for cal, fp8 in (("rac", False), ("prompt", True), ("rac", True))},
    "table5_budgets.yaml": {f"{MODELS['7b']}_{kind}_max_new_tokens-{budget}"
                            for kind in ("dense", "rac_sparsegpt40") for budget in (32768, 8192, 4096)},
    "ablation_improvements.yaml": {
        f"{MODELS['7b']}_rac_sparsegpt{s}_true_sequential-{ts}_decode-{w}"
        for s in (40, 50) for ts in ("false", "true") for w in ("1.0", "2.0")},
}


def test_every_grid_is_checked() -> None:
    assert sorted(p.name for p in GRIDS.glob("*.yaml")) == sorted(PAPER_CELLS)


@pytest.mark.parametrize("grid", sorted(PAPER_CELLS))
def test_paper_grid_lists_the_papers_cells(grid: str) -> None:
    cells = expand_grid(grid_file=GRIDS / grid, environment=False)
    names = [cell.loaded.data["name"] for cell in cells]
    assert len(names) == len(PAPER_CELLS[grid]), names
    assert set(names) == PAPER_CELLS[grid]
    assert len({cell.name for cell in cells}) == len(cells)


def test_paper_recipes_run_sparsegpts_own_order() -> None:
    cells = expand_grid(grid_file=GRIDS / "table1_math500.yaml", environment=False)
    assert all(cell.loaded.data["prune"]["true_sequential"] is False for cell in cells)
    weights = [cell.loaded.data["calibration"]["weights"] for cell in cells]  # the paper's plain weighting
    assert all((w["prompt"], w["decode"], w["position"]["kind"]) == (1.0, 1.0, "uniform") for w in weights)


def test_table2_evaluates_livecodebench_and_calibrates_on_codeforces() -> None:
    cells = expand_grid(grid_file=GRIDS / "table2_livecodebench.yaml", environment=False)
    for cell in cells:
        data = cell.loaded.data
        (task,) = data["evaluate"]["tasks"]
        assert (task["dataset"], task["release"], data["evaluate"]["samples"]) == ("livecodebench", "release_v5", 16)
        source = data["calibration"]["sources"][0]
        expected = "hf:allenai/c4:en" if data["calibration"]["kind"] == "text" else "hf:open-r1/codeforces"
        assert source["path"] == expected


def test_table4_cells_measure_throughput() -> None:
    for cell in expand_grid(grid_file=GRIDS / "table4_2of4_fp8.yaml", environment=False):
        kinds = [t["type"] for t in cell.loaded.data["evaluate"]["tasks"]]
        assert kinds.count("throughput") == 3
        assert ("math" in kinds) == bool(cell.loaded.data.get("prune"))


def test_paper_grids_document_unstated_settings() -> None:
    for grid in PAPER_CELLS:
        head = (GRIDS / grid).read_text().split("version:", 1)[0]
        assert "rac grid recipes/grids/" + grid in head, grid
        if grid.startswith(("table", "figure")):
            assert "Paper " in head and "not state" in head, grid


def test_table2_calibration_source_reads_codeforces_rows() -> None:
    """The Codeforces overlay's source, pointed at a sample in open-r1/codeforces' row format, yields
    whole statements (title, story, input/output format, examples; an empty note leaves no heading)."""
    import yaml

    from rac.calibration.sources import source_items

    overlay = yaml.safe_load((ROOT / "recipes" / "overlays" / "calibration" / "codeforces.yaml").read_text())
    (source,) = overlay["calibration"]["sources"]
    sample = ROOT / "tests" / "fixtures" / "codeforces" / "sample.jsonl"
    items = sorted(source_items({**source, "path": str(sample)}, 0, seed=0), key=lambda item: item.record)
    assert [item.text.split("\n", 1)[0] for item in items] == ["Theatre Square", "Watermelon", "Way Too Long Words"]
    theatre = items[0].text
    assert "Input\nThe input contains three" in theatre and "Examples\nInput\n6 6 4\nOutput\n4" in theatre
    assert not theatre.rstrip().endswith("Note") and "Note\nFor example, the boys" in items[1].text


def test_length_grid_has_each_lever_and_the_combination() -> None:
    """recipes/demo/length.yaml (issue 18): the reference cells, one cell per lever, and tail + recover, whose
    pruned weights are the tail cell's (same calibration and prune sections) with the recover stage on top."""
    cells = {cell.loaded.data["name"]: cell.loaded.data for cell in
             expand_grid(grid_file=GRIDS.parent / "demo" / "length.yaml", environment=False)}
    assert set(cells) == {"dense", "rac", "prompt", "rac-tail", "rac-closed-loop", "rac-recover", "rac-confidence",
                          "rac-uncertain", "rac-tail-recover"}
    tail, combo = cells["rac-tail"], cells["rac-tail-recover"]
    assert combo["calibration"] == tail["calibration"] and combo["prune"] == tail["prune"]
    assert tail.get("recover") is None and combo["recover"] == cells["rac-recover"]["recover"]
    assert combo["calibration"]["weights"]["position"]["kind"] == "tail"
    # the ALPS cell is its own grid (hours on CPU), on the same base: the tail cell with prune.method alps
    (alps,) = [c.loaded.data for c in expand_grid(grid_file=GRIDS.parent / "demo" / "length_alps.yaml",
                                                  environment=False)]
    assert alps["prune"] == {**tail["prune"], "method": "alps"} and alps["calibration"] == tail["calibration"]
