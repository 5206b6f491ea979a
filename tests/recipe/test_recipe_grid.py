"""Grid expansion: cartesian product, names, cell contents, overlays and collected errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rac.recipe import Location, RecipeError, expand_grid, grid_from_file
from rac.recipe.grid import is_grid_file, split_values

EXAMPLE = Path(__file__).parent / "data" / "smollm2_rac.yaml"  # the shared example recipe


@pytest.fixture
def recipe(write):
    return write("r.yaml", f"base: {EXAMPLE}\n")


def test_cli_axes_product_and_names(recipe):
    cells = expand_grid(recipe, axes=["prune.sparsity=0.4,0.6", "calibration.kind=rac,text"])
    assert len(cells) == 4
    labels = [c.name.rsplit("_", 1)[0] for c in cells]
    assert labels == ["sparsity-0.4_kind-rac", "sparsity-0.4_kind-text", "sparsity-0.6_kind-rac", "sparsity-0.6_kind-text"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+_[0-9a-f]{8}", c.name) for c in cells)
    assert len({c.name for c in cells}) == 4
    cell = cells[1]
    assert cell.overrides == ("prune.sparsity=0.4", "calibration.kind=text")
    assert cell.loaded.data["prune"]["sparsity"] == 0.4
    assert cell.loaded.data["calibration"]["kind"] == "text"
    assert cell.loaded.source_map["calibration.kind"] == Location("<cli>", 2, 1)


def test_names_are_stable(recipe):
    first = [c.name for c in expand_grid(recipe, axes=["prune.sparsity=0.4,0.6"])]
    assert first == [c.name for c in expand_grid(recipe, axes=["prune.sparsity=0.4,0.6"])]


def test_overlay_axis(recipe, write):
    write("wanda.yaml", "# overlay\nprune:\n  method: wanda\n")
    write("mag.yaml", "prune:\n  method: magnitude\n")
    cells = expand_grid(recipe, axes=["@wanda.yaml,@mag.yaml"], overrides=["prune.sparsity=0.3"])
    assert [c.name.rsplit("_", 1)[0] for c in cells] == ["wanda", "mag"]
    assert [c.loaded.data["prune"]["method"] for c in cells] == ["wanda", "magnitude"]
    assert cells[0].loaded.data["prune"]["sparsity"] == 0.3
    assert cells[0].loaded.source_map["prune.method"] == Location("wanda.yaml", 3, 11)
    assert cells[0].overrides == ("@wanda.yaml",)


def test_grid_file(write, recipe):
    write("ov/fp8.yaml", "quantize: {}\nexport: {format: compressed-tensors}\n")
    write("g.yaml", """
        version: 1
        recipe: r.yaml
        axes:
          prune.sparsity: [0.3, 0.5, 0.7]
          prune.block_size: [64, 128]
        overlays:
          - [ov/fp8.yaml]
        """)
    cells = grid_from_file("g.yaml")
    assert len(cells) == 6
    assert [c.loaded.data["prune"]["block_size"] for c in cells[:2]] == [64, 128]
    assert all(c.loaded.data["quantize"]["scheme"] == "fp8_w8a8" for c in cells)
    assert cells[1].name.startswith("sparsity-0.3_block_size-128_fp8_")
    assert cells[0].loaded.source_map["prune.sparsity"] == Location("g.yaml", 4, 20)


def test_every_cell_validated_errors_collected(recipe):
    with pytest.raises(RecipeError) as exc:
        expand_grid(recipe, axes=["prune.sparsity=0.5,1.5", "prune.pattern='4:2','2:4'"])
    text = str(exc.value).splitlines()
    assert text == [
        ("<cli>:1:1: $.prune.sparsity: 1.5 is out of range: must be < 1 (grid cell sparsity-1.5_pattern-4-2, "
        "sparsity-1.5_pattern-2-4)"),
        # the 1.5 cells' schema error no longer hides their bad pattern
        ("<cli>:2:1: $.prune.pattern: N:M pattern '4:2' needs 0 < N < M (grid cell sparsity-0.5_pattern-4-2, "
         "sparsity-1.5_pattern-4-2)"),
    ]


def test_grid_file_errors(write):
    write("g.yaml", "version: 1\nrecipe: r.yaml\naxis:\n  prune.sparsity: [0.1]\n")
    with pytest.raises(RecipeError, match=r"^g.yaml:3:1: \$.axis: unknown grid key 'axis' \(did you mean 'axes'\?\)"):
        grid_from_file("g.yaml")


def test_duplicate_cells_rejected(recipe):
    with pytest.raises(RecipeError, match="resolve to the same recipe"):
        expand_grid(recipe, axes=["prune.sparsity=0.5,0.50"])


def test_split_values():
    assert split_values("0.1, [1, 2],{a: 1, b: 2},'x,y'") == ["0.1", "[1, 2]", "{a: 1, b: 2}", "'x,y'"]


def test_is_grid_file(write, recipe):
    assert is_grid_file(write("g.yaml", "recipe: r.yaml\naxes: {prune.sparsity: [0.1]}\n"))
    assert not is_grid_file(recipe)
    assert not is_grid_file(write("bad.yaml", "a: [\n"))
    assert not is_grid_file("missing.yaml")


def test_repeated_axis_key_is_an_error(recipe):
    # `--axis k=1 --axis k=2` used to give one cell silently (the second value won)
    with pytest.raises(RecipeError) as exc:
        expand_grid(recipe, axes=["prune.sparsity=0.3", "prune.sparsity=0.5"])
    assert str(exc.value) == ("<cli>:2:1: $: axis 'prune.sparsity' given twice (--axis prune.sparsity=0.3 and "
                              "--axis prune.sparsity=0.5); put all its values in one axis, e.g. "
                              "--axis prune.sparsity=...,0.5")


def test_paper_grid_cells_are_named_by_what_they_are():
    # every cell of the paper grids used to be called r1-distill-7b-rac-sparsegpt50
    grids = Path(__file__).resolve().parents[2] / "recipes" / "grids"
    table1 = {c.loaded.data["name"] for c in expand_grid(grid_file=grids / "table1_math500.yaml", environment=False)}
    assert len(table1) == 48
    assert "deepseek-r1-distill-qwen-14b_c4_sparsegpt30" in table1
    assert "deepseek-r1-distill-qwen-32b_rac_sparsegpt50" in table1
    table4 = {c.loaded.data["name"] for c in expand_grid(grid_file=grids / "table4_2of4_fp8.yaml", environment=False)}
    assert "deepseek-r1-distill-qwen-14b_rac_sparsegpt_mlp-first-2of4+mlp-last-2of4_fp8" in table4
    table3 = {c.loaded.data["name"] for c in expand_grid(grid_file=grids / "table3_offpolicy.yaml", environment=False)}
    assert "deepseek-r1-distill-qwen-7b_rac-from-deepseek-r1-distill-qwen-14b_sparsegpt20" in table3


def test_table5_dense_cells_are_dense():
    # a prune.sparsity axis re-created the prune section that dense.yaml removes
    grids = Path(__file__).resolve().parents[2] / "recipes" / "grids"
    cells = expand_grid(grid_file=grids / "table5_budgets.yaml", environment=False)
    dense = [c for c in cells if "dense" in c.name]
    assert len(dense) == 3 and not any(c.loaded.data.get("prune") for c in dense)
    assert {c.loaded.data["evaluate"]["max_new_tokens"] for c in dense} == {32768, 8192, 4096}


def test_cells_named_apart_by_overlays_keep_their_names(write, recipe):
    write("a.yaml", "name: first\nprune: {sparsity: 0.3}\n")
    write("b.yaml", "name: second\nprune: {sparsity: 0.4}\n")
    cells = expand_grid(recipe, axes=["@a.yaml,@b.yaml"])
    assert [c.loaded.data["name"] for c in cells] == ["first", "second"]
