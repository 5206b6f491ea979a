"""Grid expansion: cartesian product, names, cell contents, overlays and collected errors."""

from __future__ import annotations

import re

import pytest
from conftest import EXAMPLE

from rac.recipe import Location, RecipeError, expand_grid, grid_from_file
from rac.recipe.grid import is_grid_file, split_values


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
