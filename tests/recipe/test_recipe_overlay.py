"""Overlay fragments are first-class: recognised, validated as partial recipes, accepted by `rac validate`."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from rac.cli import main
from rac.recipe import RecipeError
from rac.recipe.overlay import file_kind, grid_overlay_files, load_fragment

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
EXAMPLE = Path(__file__).parent / "data" / "smollm2_rac.yaml"


@pytest.mark.slow  # every cell of every paper grid (~10-20 s)
def test_every_repo_file_validates_as_globbed(capsys):
    """`shopt -s globstar; rac validate recipes/**/*.yaml` (23 overlays used to fail on 'version')."""
    files = sorted(str(p) for p in RECIPES.rglob("*.yaml"))
    assert main(["validate", *files]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert out.count("(overlay)") >= 23 and f"{len(files)} of {len(files)} file(s) valid" in out
    assert main(["validate", "--portable", str(RECIPES / "demo")]) == 0  # a directory stands for its YAML files
    demo = len(list((RECIPES / "demo").rglob("*.yaml")))
    assert demo >= 8 and f"{demo} of {demo} file(s) valid" in capsys.readouterr().out


def test_fragment_errors_are_located_without_missing_version(write, capsys):
    bad = write("overlays/bad.yaml", """\
        prune:
          sparsty: 0.5
          method: 3
        evaluate:
          tasks:
            - {name: x}
        foo: 1
        """)
    with pytest.raises(RecipeError) as info:
        load_fragment(bad)
    text = str(info.value)
    assert "overlays/bad.yaml:2:12: $.prune.sparsty: unknown key 'sparsty' (did you mean 'sparsity'?)" in text
    assert "overlays/bad.yaml:3:11: $.prune.method: 3 is not one of: sparsegpt, wanda, magnitude" in text
    assert "$.evaluate.tasks[0]: missing required key 'type'" in text  # list items replace: still complete
    assert "$.foo: unknown key 'foo'" in text
    assert "version" not in text and "'model'" not in text
    assert main(["validate", str(bad)]) == 2
    assert "$.prune.sparsty" in capsys.readouterr().err


def test_partial_mappings_need_no_required_keys(write):
    ok = write("overlays/model.yaml", "model:\n  dtype: float16\ncalibration:\n  rollout:\n    t_max: '${x}'\n")
    assert load_fragment(ok).raw["model"] == {"dtype": "float16"}  # model.id comes from the base


def test_how_a_fragment_is_recognised(write):
    fragment = "prune:\n  sparsity: 0.4\n"
    assert file_kind(write("overlays/deep/a.yaml", fragment)) == "overlay"
    assert file_kind(write("marked.yaml", "# an ablation\n# rac: overlay\n" + fragment)) == "overlay"
    plain = write("plain.yaml", fragment)
    assert file_kind(plain) == "recipe"  # a recipe that forgot `version` is told so
    grid = write("grid.yaml", f"recipe: {EXAMPLE}\noverlays:\n  - [plain.yaml]\n")
    assert file_kind(grid) == "grid"
    assert file_kind(plain, grid_overlay_files([grid])) == "overlay"
    assert file_kind(write("r.yaml", "version: 1\n" + fragment)) == "recipe"


def test_validate_mixed_kinds_and_misplaced_arguments(write, capsys):
    plain = write("plain.yaml", "prune:\n  sparsity: 0.4\n")
    assert main(["validate", str(plain)]) == 2
    assert "missing required key 'version'" in capsys.readouterr().err
    grid = write("grid.yaml", f"recipe: {EXAMPLE}\noverlays:\n  - [plain.yaml]\n")
    assert main(["validate", str(EXAMPLE), str(plain), str(grid)]) == 0  # the grid makes plain.yaml an overlay
    out = capsys.readouterr().out
    assert "plain.yaml (overlay)" in out and "(grid: 1 cells)" in out
    # `-v` and overrides after the file (used to be misparsed)
    assert main(["validate", str(EXAMPLE), "-v", "prune.sparsity=0.4"]) == 0
    assert main(["validate", str(EXAMPLE), "prune.sparsity=1.5"]) == 2
    assert "<cli>:1" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="needs a machine without vLLM")
def test_machine_checks_warn_unless_strict(capsys):
    recipe = str(RECIPES / "7b_50pct.yaml")
    assert main(["validate", recipe]) == 0
    assert "warning:" in capsys.readouterr().err
    assert main(["validate", "--portable", recipe]) == 0
    assert "warning" not in capsys.readouterr().err
    assert main(["validate", "--strict", recipe]) == 2
    assert "engine 'vllm' is not installed" in capsys.readouterr().err
