"""The CLI verbs that need no model: validate, show, diff, grid --dry-run, cache, help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rac.cli import main

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "tests" / "recipe" / "data" / "smollm2_rac.yaml"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for verb in ("run", "plan", "validate", "grid", "show", "diff", "cache", "rollouts", "report"):
        assert verb in out


def test_validate_ok_and_error_exit_codes(tmp_path, capsys):
    assert main(["validate", str(EXAMPLE)]) == 0
    bad = write(tmp_path / "bad.yaml", "version: 1\nmodel:\n  id: smollm2-135m\nprune:\n  sparsty: 0.5\n")
    assert main(["validate", str(EXAMPLE), str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5:12: $.prune.sparsty: unknown key 'sparsty' (did you mean 'sparsity'?)" in err.replace("\n", "")


def test_validate_reports_cli_override_location(tmp_path, capsys):
    assert main(["show", str(EXAMPLE), "prune.sparsity=1.5"]) == 2
    assert "<cli>:1" in capsys.readouterr().err


def test_show_applies_overrides_and_defaults(capsys):
    assert main(["show", str(EXAMPLE), "prune.sparsity=0.4", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["prune"]["sparsity"] == 0.4
    assert data["prune"]["block_size"] == 128  # schema default filled in


def test_diff_names_changes_and_invalidated_stages(tmp_path, capsys):
    other = write(tmp_path / "other.yaml", f"version: 1\nbase: {EXAMPLE}\nprune:\n  sparsity: 0.3\n")
    assert main(["diff", str(EXAMPLE), str(other)]) == 0
    out = capsys.readouterr().out
    assert "prune.sparsity" in out
    invalidated = out.split("stages invalidated:")[1]
    assert "prune" in invalidated and "evaluate" in invalidated
    assert "rollout" not in invalidated and "hessian" not in invalidated


def test_grid_dry_run_expands_and_validates(capsys):
    assert main(["grid", str(EXAMPLE), "--axis", "prune.sparsity=0.3,0.5", "--axis",
                 "calibration.kind=prompt,rac", "--dry-run"]) == 0
    assert "4 cells, all valid" in capsys.readouterr().out
    # overrides after options apply to every cell (the cells' recipe hashes change)
    assert main(["grid", str(EXAMPLE), "--axis", "prune.sparsity=0.3,0.5", "--dry-run"]) == 0
    plain = capsys.readouterr().out
    assert main(["grid", str(EXAMPLE), "--axis", "prune.sparsity=0.3,0.5", "--dry-run", "prune.block_size=64"]) == 0
    overridden = capsys.readouterr().out
    assert "2 cells" in overridden and overridden != plain
    with pytest.raises(SystemExit):
        main(["grid", str(EXAMPLE), "--dry-run", "--bogus"])


def test_cache_ls_and_rm(tmp_path, capsys):
    from rac.engine.cache import Cache

    cache = Cache(tmp_path / "c")
    with cache.writing("prune", "abcdef0123") as out:
        (out / "w.bin").write_bytes(b"x")
    assert main(["cache", "ls", "--cache", str(tmp_path / "c")]) == 0
    assert "abcdef0123" in capsys.readouterr().out
    assert main(["cache", "rm", "--cache", str(tmp_path / "c")]) == 2
    assert main(["cache", "rm", "abc", "--cache", str(tmp_path / "c")]) == 0
    assert cache.list() == []


def test_cache_ls_rm_gc_cover_blobs_and_stale_entries(tmp_path, capsys):
    import torch

    from rac.engine.cache import Cache

    root = tmp_path / "c"
    cache = Cache(root)
    cache.put_blob("hessian", "h0123", {"h": torch.ones(4)})
    (root / "artifacts" / "prune" / ".dead99.x.tmp").mkdir(parents=True)  # left by a killed writer
    assert main(["cache", "ls", "--cache", str(root)]) == 0
    out = capsys.readouterr().out
    assert "h0123" in out and "blob" in out and "dead99" in out and "stale" in out
    assert main(["cache", "gc", "--max-size", "1G", "--cache", str(root)]) == 0
    assert not (root / "artifacts" / "prune" / ".dead99.x.tmp").exists() and cache.has_blob("hessian", "h0123")
    assert main(["cache", "gc", "--max-size", "big", "--cache", str(root)]) == 2
    assert main(["cache", "rm", "--stage", "hessian", "--cache", str(root)]) == 0
    assert not cache.has_blob("hessian", "h0123")


def test_report_on_missing_dir_is_a_clean_error(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "no such run or grid directory" in capsys.readouterr().err


def test_run_on_cuda_without_cuda_fails_cleanly_before_work(tmp_path, tiny_model_dir, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    recipe = write(tmp_path / "r.yaml", f"version: 1\nmodel: {{id: {tiny_model_dir}}}\ncalibration: {{kind: prompt}}\n"
                                        f"prune: {{sparsity: 0.5}}\nrun: {{device: cuda, output_dir: {tmp_path}}}\n")
    assert main(["run", str(recipe), "--run-dir", str(tmp_path / "run")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_missing_model_path_is_a_recipe_error(tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", "version: 1\nmodel: {id: ./no/such/model}\n")
    assert main(["plan", str(recipe)]) == 2
    assert f"{recipe}:2:" in capsys.readouterr().err
