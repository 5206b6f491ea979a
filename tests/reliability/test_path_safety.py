"""Nothing destroyed by a path: destructive export paths and run names are refused at validation
with file:line, exports replace only what rac wrote (atomically, surviving a full disk), and
`rac cache rm` deletes only inside the cache."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import pytest

from rac.cli import main


def _recipe(path: Path, export_path: str, extra: str = "") -> Path:
    path.write_text(f"version: 1\nmodel: {{id: smollm2-135m}}\nexport:\n  format: hf\n  path: {export_path}\n{extra}")
    return path


@pytest.mark.parametrize("value", ['"."', '"~"', '"/"', '"~/"', '".."', '"${oc.env:HOME}"'])
def test_validate_refuses_destructive_export_paths(tmp_path, monkeypatch, capsys, value):
    monkeypatch.chdir(tmp_path)
    extra = "run: {allow_env: true}\n" if "oc.env" in value else ""  # env reads need the recipe's opt-in
    recipe = _recipe(tmp_path / "r.yaml", value, extra)
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:5:" in err and "export.path" in err and "refusing to export there" in err


def test_validate_refuses_cache_output_and_model_folders(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    cache = Path(os.environ["RAC_CACHE"])
    for value, why in [(str(cache), "rac cache"), (str(cache / "artifacts"), "rac cache"),
                       ("runs", "run directory"), (str(tmp_path / "models"), "holds the model")]:
        recipe = _recipe(tmp_path / "r.yaml", value, "run: {output_dir: runs}\n").read_text()
        (tmp_path / "r.yaml").write_text(recipe.replace("smollm2-135m", str(model)))
        assert main(["validate", str(tmp_path / "r.yaml")]) == 2, value
        assert why in capsys.readouterr().err, value
    _recipe(tmp_path / "r.yaml", "exports/pruned")
    assert main(["validate", str(tmp_path / "r.yaml")]) == 0


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", "x/../../y"])
def test_validate_refuses_run_names_leaving_output_dir(tmp_path, capsys, name):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"version: 1\nmodel: {{id: smollm2-135m}}\nrun:\n  name: '{name}'\n")
    assert main(["validate", str(recipe)]) == 2
    err = capsys.readouterr().err
    assert f"{recipe}:4:" in err and "run.name" in err


@pytest.fixture()
def cache_with_siblings(tmp_path):
    """A cache root inside a ~/.cache-like folder next to other tools' caches."""
    from rac.pipeline.cache import Cache

    dot_cache = tmp_path / "home" / ".cache"
    for sibling in ("huggingface", "pip"):
        (dot_cache / sibling).mkdir(parents=True)
        (dot_cache / sibling / "precious.txt").write_text("keep me")
    cache = Cache(dot_cache / "rac")
    with cache.writing("prune", "abc123") as out:
        (out / "w.bin").write_bytes(b"w")
    return cache, dot_cache


def _exit_code(argv: list[str]) -> int:
    """main's return value, or the status of the SystemExit argparse raises for a bad argument."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code or 0)


# An absolute stage path is tested with a folder of the test (never "/": a regression would wipe the machine).
@pytest.mark.parametrize("stage", ["../..", "..", "../../..", "prune/../..", "<abs>"])
def test_cache_rm_with_a_path_as_stage_deletes_nothing(cache_with_siblings, capsys, stage):
    cache, dot_cache = cache_with_siblings
    stage = str(dot_cache) if stage == "<abs>" else stage
    assert _exit_code(["cache", "rm", "--stage", stage, "--cache", str(cache.root)]) != 0
    assert "not a stage" in capsys.readouterr().err
    for sibling in ("huggingface", "pip"):
        assert (dot_cache / sibling / "precious.txt").read_text() == "keep me"
    assert cache.lookup("prune", "abc123") is not None


def test_cache_rm_unknown_stage_suggests_the_closest(cache_with_siblings, capsys):
    cache, _ = cache_with_siblings
    assert _exit_code(["cache", "rm", "--stage", "prnue", "--cache", str(cache.root)]) == 2
    assert "did you mean 'prune'" in capsys.readouterr().err
    assert main(["cache", "rm", "--stage", "prune", "--cache", str(cache.root)]) == 0
    assert cache.list() == []


# -- the export stage itself -------------------------------------------------------------------------

def _export_ctx(tmp_path: Path, model_dir: Path, target: Path, overwrite: bool = False):
    from rac.pipeline.cache import Cache
    from rac.pipeline.stage import StageContext
    from rac.recipe.validate import load_and_validate

    recipe = tmp_path / "export.yaml"
    recipe.write_text(f"version: 1\nmodel: {{id: {model_dir}}}\nexport: {{format: hf, path: {target}, "
                      f"overwrite: {str(overwrite).lower()}}}\nrun: {{output_dir: {tmp_path / 'runs'}}}\n")
    out = tmp_path / "stage-out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir()
    return StageContext(recipe=load_and_validate(recipe).data, out_dir=out, inputs={}, cache=Cache(tmp_path / "c"),
                        device="cpu", model_identity="m", run_dir=tmp_path / "runs" / "r-1")


def test_export_over_a_folder_rac_did_not_write_is_refused(tmp_path, tiny_model_dir):
    from rac.stages.export import ExportError, run

    target = tmp_path / "mine"
    target.mkdir()
    (target / "thesis.tex").write_text("years of work")
    with pytest.raises(ExportError, match="not written by rac"):
        run(_export_ctx(tmp_path, tiny_model_dir, target))
    assert (target / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    run(_export_ctx(tmp_path, tiny_model_dir, target, overwrite=True))  # explicit opt-in replaces it
    assert not (target / "thesis.tex").exists() and (target / "model.safetensors").is_file()


def test_export_replaces_its_own_previous_export(tmp_path, tiny_model_dir):
    from rac.stages.export import MARKER, run

    target = tmp_path / "exports" / "m"
    run(_export_ctx(tmp_path, tiny_model_dir, target))
    assert (target / MARKER).is_file() and (target / "config.json").is_file()
    (target / "stale-extra.txt").write_text("from the previous export")
    run(_export_ctx(tmp_path, tiny_model_dir, target))
    assert (target / "model.safetensors").is_file() and not (target / "stale-extra.txt").exists()
    assert [p.name for p in target.parent.iterdir()] == ["m"]  # no temp siblings left


def test_disk_full_during_export_keeps_the_previous_export(tmp_path, tiny_model_dir, monkeypatch):
    from rac.stages.export import run

    target = tmp_path / "exports" / "m"
    run(_export_ctx(tmp_path, tiny_model_dir, target))
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    real_copy = shutil.copyfile
    copied: list[str] = []

    def copy_then_fill_disk(src, dst, *args, **kwargs):
        if copied:
            Path(dst).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        copied.append(str(src))
        return real_copy(src, dst, *args, **kwargs)

    monkeypatch.setattr(shutil, "copyfile", copy_then_fill_disk)
    from rac.stages.export import ExportError

    with pytest.raises(ExportError, match=r"No space left on device.*previous export is unchanged"):
        run(_export_ctx(tmp_path, tiny_model_dir, target))
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in target.parent.iterdir()] == ["m"]


@pytest.mark.parametrize("where", ["cache", "run_dir", "model"])
def test_export_stage_refuses_destructive_targets_at_run_time(tmp_path, tiny_model_dir, where):
    """Defense in depth: the stage re-checks with the real cache root and run directory."""
    from rac.stages.export import ExportError, run

    ctx = _export_ctx(tmp_path, tiny_model_dir, tmp_path / "ok")
    target = {"cache": ctx.cache.root, "run_dir": ctx.run_dir, "model": tiny_model_dir}[where]
    ctx.recipe["export"]["path"] = str(target)
    with pytest.raises(ExportError, match="refusing to write there"):
        run(ctx)
    assert Path(tiny_model_dir, "config.json").is_file()
