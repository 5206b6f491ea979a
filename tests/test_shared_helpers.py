"""The one-home helpers (hashing, suggestions, N:M patterns, markdown tables, cache root) keep the
exact formats the cache keys, run names and tables had before they were merged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from rac.hashing import canonical_json, json_digest, recipe_hash
from rac.locations import default_cache_root
from rac.markdown import markdown_table
from rac.nm_pattern import PatternError, parse_pattern
from rac.suggest import did_you_mean


def test_json_digest_matches_the_formats_cache_keys_were_built_with():
    value = {"b": [1, 2], "a": Path("x")}
    loose = json.dumps(value, sort_keys=True, default=str)
    compact = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    assert json_digest(value) == hashlib.sha256(loose.encode()).hexdigest()
    assert json_digest(value, 32, compact=True) == hashlib.sha256(compact.encode()).hexdigest()[:32]
    assert canonical_json(value) == compact
    assert recipe_hash(value) == hashlib.sha256(loose.encode()).hexdigest()[:8]


def test_one_recipe_hash_for_run_dirs_and_grid_cells():
    from rac.pipeline import run
    from rac.recipe import grid

    assert run.recipe_hash is grid.recipe_hash is recipe_hash


def test_did_you_mean():
    assert did_you_mean("sparsty", ["sparsity", "pattern"]) == " (did you mean 'sparsity'?)"
    assert did_you_mean("zzz", ["sparsity"]) == ""


def test_parse_pattern_accepts_strings_and_pairs():
    assert parse_pattern("2:4") == parse_pattern((2, 4)) == (2, 4)
    assert parse_pattern(None) is None
    for bad in ("4:4", "2-4", 2, (2, 4, 8), (True, 4)):
        with pytest.raises(PatternError):
            parse_pattern(bad)


def test_markdown_table():
    assert markdown_table(["a", "b"], [[1, "x"]]) == ["| a | b |", "|---|---|", "| 1 | x |"]


def test_cache_root_reads_rac_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("RAC_CACHE", str(tmp_path))
    assert default_cache_root() == tmp_path
    monkeypatch.delenv("RAC_CACHE")
    assert default_cache_root() == Path.home() / ".cache" / "rac"
