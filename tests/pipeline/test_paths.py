import os
from pathlib import Path

import pytest

from rac.pipeline.paths import UnsafePathError, export_path_problem, is_within, resolve_user_path, safe_rmtree


def test_resolve_user_path_expands_home_and_resolves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_user_path("~") == Path.home().resolve()
    assert resolve_user_path("a/../b") == (tmp_path / "b").resolve()
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    assert resolve_user_path("link") == (tmp_path / "real").resolve()


def test_is_within_and_safe_rmtree(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    assert is_within(root / "a", root) and not is_within(root, root) and is_within(root, root, strict=False)
    assert not is_within(root / ".." / "outside", root)
    for bad in (root, root / ".." / "outside", Path("/")):
        with pytest.raises(UnsafePathError):
            safe_rmtree(bad, root)
    (root / "link").symlink_to(tmp_path / "outside")
    safe_rmtree(root / "link", root)  # the link goes, never what it points to
    assert (tmp_path / "outside").is_dir() and not (root / "link").exists()
    safe_rmtree(root / "a", root)
    assert not (root / "a").exists()


def test_export_path_problems(tmp_path, monkeypatch):
    cwd = tmp_path / "work" / "project"
    cwd.mkdir(parents=True)
    cache, runs, model = tmp_path / "cache", cwd / "runs", tmp_path / "models" / "m"
    check = lambda p: export_path_problem(Path(p), cache_root=cache, run_dirs=[runs / "r-1", runs],  # noqa: E731
                                          model_paths=[model], cwd=cwd)
    assert "filesystem root" in check("/")
    assert "home directory" in check(os.path.expanduser("~"))
    assert "working directory" in check(cwd) and "working directory" in check(tmp_path / "work")
    assert "run directory" in check(runs) and "run directory" in check(runs / "r-1")
    assert "cache" in check(cache) and "cache" in check(cache / "artifacts" / "x")
    assert "model" in check(model) and "model" in check(tmp_path / "models")
    assert check(cwd / "exports" / "pruned") is None and check(runs / "r-1" / "model") is None
