"""Path safety: where rac may write or delete, checked before anything is touched.

rac deletes and replaces folders (cache entries, exports); a wrong path must never reach
``shutil.rmtree``. Every delete checks that the target lies strictly inside the root it belongs to,
and an export target that is ``/``, a home directory, the working directory (or one of its
ancestors), the run or cache directory (or one of their ancestors) or the model folder is refused.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from rac.errors import RacError


class UnsafePathError(RacError, ValueError):
    """A path rac was asked to delete or overwrite lies outside what rac owns."""


def resolve_user_path(value: str | os.PathLike[str], base: Path | None = None) -> Path:
    """``~`` expanded, made absolute (relative to ``base`` or the working directory), symlinks resolved."""
    path = Path(os.path.expanduser(os.fspath(value)))
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    return path.resolve()


def is_within(path: Path, root: Path, strict: bool = True) -> bool:
    """Whether resolved ``path`` lies inside resolved ``root`` (``strict``: and is not ``root`` itself)."""
    path, root = Path(path).resolve(), Path(root).resolve()
    return path != root and root in path.parents if strict else path == root or root in path.parents


def safe_rmtree(path: Path, root: Path) -> None:
    """Remove ``path`` (a folder or a file) only when it lies strictly inside ``root``; a symbolic
    link is removed itself, never what it points to."""
    path, root = Path(path), Path(root).resolve()
    located = path.parent.resolve() / path.name  # the entry itself, links not followed
    if path.name in ("", ".", "..") or located == root or root not in located.parents:
        raise UnsafePathError(f"refusing to delete {path}: it is not inside {root}")
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path)


def home_directories() -> set[Path]:
    """The home directory of the current user and of every account on this machine."""
    homes = {Path.home()}
    if os.environ.get("HOME"):
        homes.add(Path(os.environ["HOME"]))
    try:
        import pwd

        homes.update(Path(entry.pw_dir) for entry in pwd.getpwall() if entry.pw_dir)
    except (ImportError, OSError):
        pass
    resolved = set()
    for home in homes:
        try:
            resolved.add(home.resolve())
        except OSError:
            continue
    return resolved


def export_path_problem(target: Path, *, cache_root: Path | None = None, run_dirs: Iterable[Path] = (),
                        model_paths: Iterable[Path] = (), cwd: Path | None = None) -> str | None:
    """Why ``target`` (resolved) must not be an export folder, or None when it may be.

    ``run_dirs``: the run directory and the folder holding run directories; the target may be
    neither of them nor an ancestor. ``cache_root``: the target may not be it, inside it or an
    ancestor. ``model_paths``: local model folders/files the target may not be or contain.
    """
    target = Path(target).resolve()
    cwd = (cwd or Path.cwd()).resolve()
    if target == Path(target.anchor):
        return f"{target} is the filesystem root"
    if target in home_directories():
        return f"{target} is a home directory"
    if target == cwd or target in cwd.parents:
        return f"{target} is the working directory or one of its parents"
    for run_dir in run_dirs:
        run_dir = Path(run_dir).resolve()
        if target == run_dir or target in run_dir.parents:
            return f"{target} holds the run directory {run_dir}"
    if cache_root is not None:
        cache_root = Path(cache_root).resolve()
        if target == cache_root or target in cache_root.parents or cache_root in target.parents:
            return f"{target} overlaps the rac cache {cache_root}"
    for model in model_paths:
        model = Path(model).resolve()
        if target == model or target in model.parents:
            return f"{target} holds the model {model}"
    return None
