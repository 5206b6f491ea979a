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
    assert main(["diff", str(EXAMPLE), str(other)]) == 1  # 1: different (like git diff --exit-code)
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
    from rac.pipeline.cache import Cache

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

    from rac.pipeline.cache import Cache

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


def test_run_on_cuda_without_cuda_fails_cleanly_before_work(tmp_path, tiny_model_dir, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # also on a CUDA machine
    recipe = write(tmp_path / "r.yaml", f"version: 1\nmodel: {{id: {tiny_model_dir}}}\ncalibration: {{kind: prompt}}\n"
                                        f"prune: {{sparsity: 0.5}}\nrun: {{device: cuda, output_dir: {tmp_path}}}\n")
    assert main(["run", str(recipe), "--run-dir", str(tmp_path / "run")]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_missing_model_path_is_a_recipe_error(tmp_path, capsys):
    recipe = write(tmp_path / "r.yaml", "version: 1\nmodel: {id: ./no/such/model}\n")
    assert main(["plan", str(recipe)]) == 2
    assert f"{recipe}:2:" in capsys.readouterr().err


# -- plan / show / grid --dry-run / keys and CLI consistency (issue 14) --------------------------------------
@pytest.fixture
def offline(monkeypatch):
    """The hub is unreachable, whatever this machine's network."""
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise OSError("no network in this test")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)


def test_plan_demo_writes_nothing_and_takes_seconds(tmp_path, monkeypatch, capsys):
    import time

    cache = tmp_path / "fresh-cache"
    monkeypatch.setenv("RAC_CACHE", str(cache))
    start = time.perf_counter()
    assert main(["plan", str(REPO / "recipes" / "demo" / "base.yaml")]) == 0
    elapsed = time.perf_counter() - start
    captured = capsys.readouterr()
    assert not cache.exists()  # no GGUF conversion, no artifact: nothing written to the cache
    assert elapsed < 60, f"rac plan took {elapsed:.0f}s"  # seconds on an idle machine; generous for CI
    assert "\r" not in captured.out + captured.err  # no carriage-return progress bar in a log
    out = captured.out
    assert "LlamaForCausalLM, 30 blocks, 0.13B parameters" in out
    assert "estimate" in out and "Hessians: 30 block(s)" in out
    assert "0-29" in out  # scope table from the config's depth


def test_plan_7b_without_vllm_or_network_still_estimates(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "cache"))
    assert main(["plan", str(REPO / "recipes" / "7b_50pct.yaml")]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("note:")]
    assert any("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B: hub unreachable (OSError): cache hits unknown" in n
               for n in notes)
    assert any("shapes from rac's table of known configs" in n for n in notes)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        assert any("not available here: engine 'vllm' is not installed" in n for n in notes)
    out = captured.out
    assert "Qwen2ForCausalLM, 28 blocks, 7.62B parameters" in out
    assert "Hessians: 28 block(s) x 1.6 GB" in out
    assert "500" not in notes and "16.4M" in out  # MATH-500 x 32768 new tokens
    assert not (tmp_path / "cache").exists()


def test_plan_unknown_hub_model_offline_says_so_in_one_line(tmp_path, monkeypatch, offline, capsys):
    recipe = write(tmp_path / "r.yaml", "version: 1\nmodel: {id: someorg/some-model}\ncalibration: {kind: prompt}\n"
                                        "prune: {sparsity: 0.5}\n")
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "cache"))
    assert main(["plan", str(recipe)]) == 0
    captured = capsys.readouterr()
    assert "someorg/some-model: hub unreachable (OSError): cache hits unknown" in captured.err
    assert "Traceback" not in captured.err and "hessian" in captured.out and "prune" in captured.out


def test_plan_and_show_take_a_grid_cell(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "cache"))
    demo = str(REPO / "recipes" / "demo" / "demo.yaml")
    assert main(["show", demo]) == 2  # a grid needs --cell: the cells are listed
    err = capsys.readouterr().err
    assert "is a grid of 4 cells; pick one with --cell NAME" in err and "prompt_" in err
    assert main(["show", demo, "--cell", "promt"]) == 2
    assert "(did you mean 'prompt_" in capsys.readouterr().err
    assert main(["show", demo, "--cell", "c4", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["calibration"]["kind"] == "text"
    assert main(["plan", demo, "--cell", "dense"]) == 0
    out = capsys.readouterr().out
    assert "evaluate" in out and "prune" not in out.split("estimate")[0].split("plan")[1]


def test_grid_dry_run_shows_each_cells_differences_and_cache_state(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "cache"))
    assert main(["grid", str(REPO / "recipes" / "demo" / "demo.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 cells, all valid" in out
    assert "calibration.kind: rac -> text" in out  # the c4 cell
    assert "cache: rollout miss, hessian miss, prune miss, evaluate miss" in out
    assert not (tmp_path / "cache").exists()


def test_grid_dry_run_of_a_vllm_grid_is_portable(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.setenv("RAC_CACHE", str(tmp_path / "cache"))
    assert main(["grid", str(REPO / "recipes" / "grids" / "table3_offpolicy.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "8 cells, all valid" in out and "cache: unknown here" in out
    assert "calibration.rollout.model: null -> {" in out


def test_repeated_axis_is_an_error(capsys):
    assert main(["grid", str(EXAMPLE), "--axis", "prune.sparsity=0.3", "--axis", "prune.sparsity=0.5",
                 "--dry-run"]) == 2
    assert "axis 'prune.sparsity' given twice" in capsys.readouterr().err


def test_show_origin_marks_defaults_files_and_cli(capsys):
    assert main(["show", str(EXAMPLE), "--origin", "prune.sparsity=0.4"]) == 0
    lines = capsys.readouterr().out.splitlines()
    line = lambda key: next(entry for entry in lines if entry.strip().startswith(f"{key}:"))  # noqa: E731
    assert line("sparsity").endswith("# <cli>:1")
    assert line("block_size").endswith("# default")
    assert line("method").endswith(f"# {EXAMPLE}:18")
    assert main(["show", str(EXAMPLE), "--origin", "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["model.id"] == {"value": "smollm2-135m", "origin": f"{EXAMPLE}:5"}
    assert data["prune.dampening"]["origin"] == "default"


def test_keys_lists_type_default_range_and_description(capsys):
    assert main(["keys", "prune"]) == 0
    out = capsys.readouterr().out
    assert "prune.sparsity  (number; default 0.5; >= 0, < 1)" in out
    assert "prune.scopes[].blocks" in out
    assert not any(line.startswith("calibration") for line in out.splitlines())
    assert main(["keys", "prun.sparsity"]) == 2
    assert "did you mean 'prune.sparsity'" in capsys.readouterr().err


def test_every_positional_argument_has_help():
    import argparse

    from rac.cli import build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from parsers(sub)

    missing = [f"{p.prog} {a.dest}" for p in parsers(build_parser()) for a in p._actions
               if not a.option_strings and not isinstance(a, argparse._SubParsersAction) and not a.help]
    assert missing == []


def test_validate_parses_verbose_and_applies_overrides(tmp_path, capsys):
    assert main(["validate", str(EXAMPLE), "-v"]) == 0
    assert main(["validate", str(EXAMPLE), "prune.sparsity=0.4"]) == 0  # an override, not a file
    capsys.readouterr()
    assert main(["validate", str(EXAMPLE), "prune.sparsity=1.5"]) == 2
    assert "<cli>:1:1: $.prune.sparsity" in capsys.readouterr().err


def test_cache_stage_typo_is_an_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["cache", "ls", "--stage", "prunee", "--cache", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "'prunee' is not a stage or blob kind (did you mean 'prune'?)" in capsys.readouterr().err


def test_run_takes_output_dir_like_grid(tmp_path):
    from rac.cli import build_parser

    args = build_parser().parse_args(["run", "r.yaml", "--output-dir", str(tmp_path)])
    assert args.output_dir == tmp_path and args.run_dir is None
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "r.yaml", "--output-dir", "a", "--run-dir", "b"])
