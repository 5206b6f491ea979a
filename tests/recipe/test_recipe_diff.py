"""Semantic recipe diffs and `rac diff` for review: kinds, git revisions, name-matched lists, exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rac.cli import main
from rac.recipe import ABSENT, RecipeChange, diff_recipes, load_recipe

REPO = Path(__file__).resolve().parents[2]
RECIPES = REPO / "recipes"
EXAMPLE = Path(__file__).parent / "data" / "smollm2_rac.yaml"
R14B = "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"


def test_diff_after_defaults_and_interpolation(write):
    write("a.yaml", f"base: {EXAMPLE}\nprune:\n  block_size: 128\n")  # the default, spelled out
    write("b.yaml", f"base: {EXAMPLE}\nprune:\n  sparsity: 0.6\n")
    a, b = load_recipe("a.yaml").data, load_recipe("b.yaml").data
    assert diff_recipes(a, b) == [RecipeChange("prune.sparsity", 0.5, 0.6)]
    assert diff_recipes(a, a) == []


def test_diff_lists_of_named_dicts_by_name():
    a = {"evaluate": {"tasks": [{"name": "g", "limit": 1}, {"name": "t"}]}, "q": {"ignore": ["lm_head"]}}
    b = {"evaluate": {"tasks": [{"name": "g", "limit": 2}]}, "q": {"ignore": ["lm_head", "x"]}, "n": 1}
    assert diff_recipes(a, b) == [
        RecipeChange("evaluate.tasks[g].limit", 1, 2),
        RecipeChange("evaluate.tasks[t]", {"name": "t"}, ABSENT),
        RecipeChange("q.ignore", ["lm_head"], ["lm_head", "x"]),
        RecipeChange("n", ABSENT, 1),
    ]


def test_swapping_two_eval_tasks_is_one_change():
    math = {"name": "math500", "type": "math", "dataset": "math500", "limit": None, "samples": 1}
    code = {"name": "lcb", "type": "code", "dataset": "leetcode", "limit": 10, "samples": 1}
    changes = diff_recipes({"evaluate": {"tasks": [math, code]}}, {"evaluate": {"tasks": [code, math]}})
    assert changes == [RecipeChange("evaluate.tasks (order by name)", ["math500", "lcb"], ["lcb", "math500"])]
    # inserting a task in front changes one item, not every position after it
    extra = {"name": "gsm8k", "type": "math", "dataset": "gsm8k_test"}
    changes = diff_recipes({"evaluate": {"tasks": [math, code]}}, {"evaluate": {"tasks": [extra, math, code]}})
    assert changes == [RecipeChange("evaluate.tasks[gsm8k]", ABSENT, extra)]


def test_sources_and_scopes_matched_by_identity():
    a = {"calibration": {"sources": [{"dataset": "c4", "weight": 1.0}, {"dataset": "gsm8k_train", "weight": 1.0}]}}
    b = {"calibration": {"sources": [{"dataset": "gsm8k_train", "weight": 2.0}, {"dataset": "c4", "weight": 1.0}]}}
    assert diff_recipes(a, b) == [
        RecipeChange("calibration.sources[gsm8k_train].weight", 1.0, 2.0),
        RecipeChange("calibration.sources (order by dataset)", ["c4", "gsm8k_train"], ["gsm8k_train", "c4"]),
    ]
    # items without a unique identity fall back to positions
    a = {"x": [{"v": 1}, {"v": 2}]}
    assert diff_recipes(a, {"x": [{"v": 1}, {"v": 3}]}) == [RecipeChange("x[1].v", 2, 3)]


def test_numeric_equality_but_bool_is_not_int():
    assert diff_recipes({"x": 1}, {"x": 1.0}) == []
    assert diff_recipes({"x": 1}, {"x": True}) == [RecipeChange("x", 1, True)]


@pytest.mark.slow  # a fresh interpreter (imports torch for the stage contract)
def test_offpolicy_overlay_on_the_7b_recipe_non_tty_80_columns():
    """On a machine without vLLM: exit 1, full model id on one line, no quantize among the stages."""
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "rac.cli", "diff", "recipes/7b_50pct.yaml",
                           "recipes/overlays/calibration/offpolicy_14b.yaml"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "not installed" not in proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("calibration.rollout.model:"))
    assert f'"id": "{R14B}"' in line and len(line) > 80
    stages = next(x for x in proc.stdout.splitlines() if x.startswith("stages invalidated:"))
    assert "rollout" in stages and "quantize" not in stages


def test_full_model_ids_at_80_columns_in_process(monkeypatch, capsys):
    from rac import ui

    monkeypatch.setattr(ui.console, "width", 80)
    assert main(["diff", str(RECIPES / "7b_50pct.yaml"), str(RECIPES / "overlays" / "model" / "14b.yaml")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert '  model.id: "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" → "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B"' in lines


def test_same_is_exit_0_errors_exit_2(write, capsys):
    assert main(["diff", str(EXAMPLE), str(EXAMPLE)]) == 0
    assert "no semantic difference" in capsys.readouterr().out
    assert main(["diff", str(EXAMPLE), "missing.yaml"]) == 2
    bad = write("bad.yaml", f"base: {EXAMPLE}\nprune:\n  sparsty: 0.4\n")
    assert main(["diff", str(EXAMPLE), str(bad)]) == 2
    assert "bad.yaml:3:12: $.prune.sparsty: unknown key" in capsys.readouterr().err
    assert main(["diff", str(EXAMPLE)]) == 2  # one side only
    grid = write("g.yaml", f"recipe: {EXAMPLE}\naxes:\n  prune.sparsity: [0.3]\n")
    assert main(["diff", str(EXAMPLE), str(grid)]) == 2  # a recipe is not a grid
    assert "cannot compare a recipe with a grid" in capsys.readouterr().err


def test_quantize_listed_only_when_a_recipe_quantizes(write, capsys):
    write("a.yaml", f"base: {EXAMPLE}\nmodel:\n  dtype: bfloat16\n")
    assert main(["diff", str(EXAMPLE), "a.yaml"]) == 1
    assert "quantize" not in capsys.readouterr().out.split("stages invalidated:")[1]
    write("q.yaml", f"base: {EXAMPLE}\nquantize:\n  scheme: fp8_w8a8\n")
    assert main(["diff", str(EXAMPLE), "q.yaml"]) == 1
    invalidated = capsys.readouterr().out.split("stages invalidated:")[1].splitlines()[0]
    assert "quantize" in invalidated and "rollout" not in invalidated


def test_overlays_diff_as_fragments(write, capsys):
    a = write("overlays/a.yaml", "calibration:\n  kind: prompt\n")
    b = write("overlays/b.yaml", "calibration:\n  kind: text\n  sources: [{dataset: c4}]\n")
    assert main(["diff", str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert 'calibration.kind: "prompt" → "text"' in out
    assert "calibration.sources: (absent)" in out


def test_md_of_two_grids_lists_added_and_removed_cells(write, capsys):
    old = write("old.yaml", f"version: 1\nrecipe: {EXAMPLE}\naxes:\n  prune.sparsity: [0.3, 0.5]\n")
    new = write("new.yaml", f"version: 1\nrecipe: {EXAMPLE}\naxes:\n  prune.sparsity: [0.5, 0.6]\n"
                "  prune.block_size: [64]\n")
    assert main(["diff", str(old), str(old), "--format", "md"]) == 0
    capsys.readouterr()
    assert main(["diff", str(old), str(new), "--format", "md"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("### rac recipe review")
    # an added cell reuses the rollouts and Hessians of an old cell: only prune and evaluate run
    assert "| `sparsity-0.6_block_size-64` | added | prune, evaluate (reuses sparsity-0." in out
    assert "| `sparsity-0.3` | removed |" in out
    assert "| `sparsity-0.5` | removed |" in out and "2 added, 2 removed" in out
    body = out.split("<sub>")[0]
    assert "evaluation tokens" in body and "rollout tokens" not in body  # the cost of the cells to run
    # a new calibration budget: one rollout shared by both new cells, counted once
    newer = write("newer.yaml", f"version: 1\nrecipe: {EXAMPLE}\naxes:\n  prune.sparsity: [0.3, 0.5]\n"
                  "  calibration.budget.tokens: [8192]\n")
    assert main(["diff", str(old), str(newer), "--format", "md"]) == 1
    out = capsys.readouterr().out
    assert "Estimated cost of what must re-run: 8.19k rollout tokens" in out


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository holding part of recipes/ in two commits: HEAD changes the paper base and a grid."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "clone"
    for part in ("7b_50pct.yaml", "paper", "overlays", "grids/table3_offpolicy.yaml"):
        source, target = RECIPES / part, repo / "recipes" / part
        target.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if source.is_dir() else shutil.copy)(source, target)
    _git(repo, "init", "-q")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "add", "-A")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "one")
    base = repo / "recipes" / "paper" / "base.yaml"
    base.write_text(base.read_text().replace("t_max: 8192", "t_max: 4096"))
    grid = repo / "recipes" / "grids" / "table3_offpolicy.yaml"
    grid.write_text(grid.read_text().replace("[0.2, 0.3, 0.4, 0.5]", "[0.3, 0.4, 0.5, 0.6]"))
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "two")
    monkeypatch.chdir(repo)
    return repo


def test_rev_path_resolves_the_base_chain_at_that_revision(clone, capsys):
    assert main(["diff", "HEAD~1:recipes/7b_50pct.yaml", "recipes/7b_50pct.yaml"]) == 1
    out = capsys.readouterr().out
    assert "calibration.rollout.t_max: 8192 → 4096" in out  # the base changed, not the recipe file
    assert main(["diff", "HEAD:recipes/7b_50pct.yaml", "recipes/7b_50pct.yaml"]) == 0
    capsys.readouterr()
    assert main(["diff", "nosuchrev:recipes/7b_50pct.yaml", "recipes/7b_50pct.yaml"]) == 2
    assert "nosuchrev" in capsys.readouterr().err
    # a relative data path read at a revision points at the same working-tree file: no difference
    (clone / "recipes" / "data").mkdir()
    (clone / "recipes" / "data" / "x.jsonl").write_text('{"q": "1+1?"}\n')  # data is not versioned with recipes
    (clone / "recipes" / "local.yaml").write_text(
        "version: 1\nbase: paper/base.yaml\ncalibration:\n  sources:\n    - {path: data/x.jsonl, field: q}\n")
    _git(clone, "add", "recipes/local.yaml")
    _git(clone, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "three")
    assert main(["diff", "HEAD:recipes/local.yaml", "recipes/local.yaml"]) == 0
    assert main(["diff", "HEAD:./recipes/local.yaml", "recipes/7b_50pct.yaml"]) == 1
    assert "calibration.sources" in capsys.readouterr().out


def test_git_range_reviews_recipes_and_grid_cells(clone, capsys):
    assert main(["diff", "--git", "HEAD~1..HEAD", "--format", "md"]) == 1
    out = capsys.readouterr().out
    assert "`recipes/7b_50pct.yaml` (recipe)" in out  # unchanged file, changed base
    assert "`recipes/paper/base.yaml` (recipe)" in out
    assert "`recipes/grids/table3_offpolicy.yaml` (grid)" in out
    assert "| `sparsity-0.6_onpolicy` | added |" in out and "| `sparsity-0.2_onpolicy` | removed |" in out
    assert "overlays/" not in out.split("rac recipe review")[1].split("<sub>")[0].replace("(see", "")
    assert main(["diff", "--git", "HEAD..HEAD"]) == 0
    assert "no semantic difference" in capsys.readouterr().out
    # an invalid recipe in the new revision: exit 2, located as REV:path
    (clone / "recipes" / "7b_50pct.yaml").write_text("version: 1\nbase: paper/base.yaml\nprune: {sparsty: 1}\n")
    assert main(["diff", "--git", "HEAD"]) == 2
    assert "recipes/7b_50pct.yaml:3:" in capsys.readouterr().err


@pytest.mark.slow  # validates every file of the clone
def test_review_validates_everything_and_writes_the_comment(clone, capsys):
    assert main(["review", "HEAD~1..HEAD", "--output", "review.md"]) == 0
    text = (clone / "review.md").read_text()
    assert text.startswith("### rac recipe review: HEAD~1..HEAD")
    assert "| `sparsity-0.6_onpolicy` | added |" in text
    assert "recipe file(s) under recipes/ valid" in text and "Invalid recipes" not in text
    (clone / "recipes" / "overlays" / "model" / "14b.yaml").write_text("model:\n  idd: x\n")
    assert main(["review", "HEAD", "--output", "review.md"]) == 2  # HEAD vs the working tree
    text = (clone / "review.md").read_text()
    assert "**Invalid recipes**" in text and "error: recipes/overlays/model/14b.yaml:2:8: $.model.idd: unknown key" in text
    assert main(["review", "nosuchrev..HEAD"]) == 2


def test_workflow_and_hooks_call_real_rac_commands():
    """Every `rac ...` line of the PR workflow and the pre-commit hooks parses with this CLI."""
    import re
    import shlex

    import yaml

    from rac.cli import build_parser

    workflow = yaml.safe_load((REPO / ".github" / "workflows" / "recipes.yml").read_text())
    runs = [step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"]]
    hooks = yaml.safe_load((REPO / ".pre-commit-hooks.yaml").read_text())
    lines = [line.strip() for run in runs for line in run.splitlines() if line.strip().startswith("rac ")]
    lines += [" ".join([h["entry"], *h.get("args", [])]) for h in hooks]
    assert any(" review " in f" {line} " for line in lines) and any(" validate " in f" {line} " for line in lines)
    for line in lines:
        line = re.sub(r"\$\{\{[^}]*\}\}", "x", line).split(">")[0]
        build_parser().parse_args(shlex.split(line)[1:])  # SystemExit on an unknown verb or option


def test_recipe_at_a_revision_against_an_overlay(clone, capsys):
    assert main(["diff", "HEAD~1:recipes/7b_50pct.yaml", "recipes/overlays/calibration/offpolicy_14b.yaml"]) == 1
    out = capsys.readouterr().out
    assert R14B in out and "t_max" not in out  # both sides resolve the base at HEAD~1


def test_grid_cells_sharing_a_label_are_kept_apart(write):
    from rac.recipe.compare import load_side

    write("a/overlays/c4.yaml", "prune:\n  sparsity: 0.3\n")
    write("b/overlays/c4.yaml", "prune:\n  sparsity: 0.4\n")
    grid = write("g.yaml", f"recipe: {EXAMPLE}\noverlays:\n  - [a/overlays/c4.yaml, b/overlays/c4.yaml]\n")
    cells = load_side(str(grid)).cells
    assert len(cells) == 2 and all(name.startswith("c4_") for name in cells)
