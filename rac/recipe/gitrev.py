"""Recipes at other git revisions: ``REV:path`` arguments and ``BASE..HEAD`` ranges.

A revision is read by copying the YAML files it holds (``git ls-tree`` + ``git cat-file --batch``)
into a temporary directory with the repository's layout, so a recipe's ``base:`` chain, a grid's
``recipe:`` and ``overlays:`` all resolve *at that revision*. Other files (data that recipes name by
a relative path) are the working tree's, linked into the copy; paths into the copy are mapped back
to the working tree in the resolved recipe, and error locations read ``REV:path``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rac.errors import RacError
from rac.recipe.errors import Location, RecipeError, RecipeIssue

YAML_SUFFIXES = (".yaml", ".yml")
WORKTREE = ""  # the revision name of the working tree


class GitError(RacError, ValueError):
    """git is missing, this is not a repository, or a revision/path does not exist."""


def git(args: list[str], cwd: Path | str | None = None, stdin: bytes | None = None) -> bytes:
    """Run git; failures raise GitError with git's own message."""
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, input=stdin, capture_output=True, check=False)
    except FileNotFoundError:
        raise GitError("git is not installed (needed for REV:path and --git)") from None
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(f"git {' '.join(args)}: {reason[-1] if reason else f'exit {proc.returncode}'}")
    return proc.stdout


def repo_root(cwd: Path | str | None = None) -> Path:
    """The top-level directory of the working tree around ``cwd``."""
    return Path(git(["rev-parse", "--show-toplevel"], cwd).decode().strip())


def split_rev_arg(arg: str) -> tuple[str, str] | None:
    """``"HEAD~1:recipes/a.yaml"`` -> ``("HEAD~1", "recipes/a.yaml")``; None for an existing local path
    or an argument without ``:`` (git's rules: the path is relative to the repository root unless it
    starts with ``./`` or ``../``)."""
    if os.path.exists(arg) or ":" not in arg:
        return None
    rev, _, path = arg.partition(":")
    return (rev, path) if rev and path else None


def split_range(spec: str) -> tuple[str, str]:
    """``"A..B"`` -> ``("A", "B")``; ``"A"`` or ``"A.."`` -> ``("A", WORKTREE)`` (the working tree)."""
    if "..." in spec:
        raise GitError(f"{spec!r}: use BASE..HEAD (two dots); the merge base is not computed here")
    base, _, head = spec.partition("..")
    if not base:
        raise GitError(f"{spec!r}: expected BASE..HEAD, e.g. origin/main..HEAD")
    return base, head


@dataclass
class Tree:
    """The YAML files of one revision (or the working tree when ``rev`` is WORKTREE), under ``root``."""

    rev: str
    root: Path  # where the files are on disk (a temporary copy for a revision)
    repo: Path  # the working tree's top level

    def label(self, rel: str) -> str:
        return f"{self.rev}:{rel}" if self.rev else rel

    def path(self, rel: str) -> Path:
        return self.root / rel

    def yaml_files(self, under: str = "") -> list[str]:
        """Repository-relative paths of the YAML files below ``under`` ("" = everywhere)."""
        if self.rev:
            names = git(["ls-tree", "-r", "-z", "--name-only", self.rev, "--", under or "."], self.repo)
            rels = [n for n in names.decode().split("\0") if n]
        else:
            names = git(["ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", under or "."],
                        self.repo)
            rels = [n for n in names.decode().split("\0") if n and (self.repo / n).is_file()]
        return sorted(r for r in rels if r.endswith(YAML_SUFFIXES))

    def relabel(self, exc: RecipeError) -> RecipeError:
        """The same error with locations in the tree shown as ``REV:path`` (working tree: ``path``)."""
        prefix = str(self.root) + os.sep
        issues = []
        for issue in exc.issues:
            file = issue.location.file
            if os.path.isabs(file) and file.startswith(prefix):  # paths in the tree are absolute
                file = self.label(os.path.relpath(file, self.root))
            issues.append(RecipeIssue(Location(file, issue.location.line, issue.location.col), issue.path,
                                      issue.message.replace(prefix, self.label(""))))
        return RecipeError(issues)

    def unmap(self, value: Any) -> Any:
        """Strings pointing into the copy -> the same path in the working tree (recursively)."""
        if not self.rev:
            return value
        if isinstance(value, dict):
            return {k: self.unmap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.unmap(v) for v in value]
        if isinstance(value, str) and value.startswith(str(self.root)):
            return str(self.repo) + value[len(str(self.root)):]
        return value


def checkout_yaml(rev: str, repo: Path, into: Path) -> Tree:
    """Copy every YAML file of ``rev`` into ``into`` (repository layout); the revision must exist."""
    git(["rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], repo)
    tree = Tree(rev, into, repo)
    rels = tree.yaml_files()
    if not rels:
        return tree
    out = git(["cat-file", "--batch"], repo, "".join(f"{rev}:{r}\n" for r in rels).encode())
    pos = 0
    for rel in rels:
        header_end = out.index(b"\n", pos)
        header = out[pos:header_end].split()
        if len(header) < 3 or header[1] != b"blob":  # submodule or missing: nothing to copy
            pos = header_end + 1
            continue
        size = int(header[2])
        body = out[header_end + 1: header_end + 1 + size]
        pos = header_end + 1 + size + 1
        target = into / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
    _link_missing(into, repo)
    return tree


def _link_missing(copy_dir: Path, work_dir: Path) -> None:
    """Symlink the working tree's non-YAML entries into the copy, so data files that recipes name by a
    relative path resolve (to the working tree's file) at any revision; YAML stays the revision's."""
    for entry in work_dir.iterdir():
        target = copy_dir / entry.name
        if entry.name == ".git" or entry.name.endswith(YAML_SUFFIXES) or target.is_symlink():
            continue
        if target.is_dir() and entry.is_dir():
            _link_missing(target, entry)
        elif not target.exists():
            target.symlink_to(entry.resolve(), target_is_directory=entry.is_dir())


class Revisions:
    """Trees of revisions, each copied once into a temporary directory that ``close()`` removes."""

    def __init__(self, repo: Path | None = None) -> None:
        self._repo = repo
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._trees: dict[str, Tree] = {}

    @property
    def repo(self) -> Path:
        if self._repo is None:
            self._repo = repo_root()
        return self._repo

    def tree(self, rev: str) -> Tree:
        if not rev:
            return Tree(WORKTREE, self.repo, self.repo)
        if rev not in self._trees:
            if self._tmp is None:
                self._tmp = tempfile.TemporaryDirectory(prefix="rac-rev-")
            into = Path(self._tmp.name) / str(len(self._trees))
            into.mkdir()
            self._trees[rev] = checkout_yaml(rev, self.repo, into)
        return self._trees[rev]

    def resolve(self, arg: str) -> tuple[Tree | None, str]:
        """A CLI argument -> (tree, path on disk): ``REV:path`` is copied out of git, else (None, arg)."""
        split = split_rev_arg(arg)
        if split is None:
            return None, arg
        rev, rel = split
        if rel.startswith(("./", "../")):
            rel = os.path.relpath(os.path.normpath(os.path.join(os.getcwd(), rel)), self.repo)
        tree = self.tree(rev)
        if not tree.path(rel).is_file():
            raise GitError(f"{arg}: no such YAML file at revision {rev} (paths are relative to the "
                           f"repository root {self.repo}; use {rev}:./path for one relative to here)")
        return tree, str(tree.path(rel))

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Revisions:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
