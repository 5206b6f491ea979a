import os

import pytest
import torch

from rac.pipeline.cache import Cache
from rac.pipeline.housekeeping import entries, gc, parse_size


def test_parse_size():
    assert parse_size("1000") == 1000
    assert parse_size("2K") == 2048 and parse_size("1.5G") == int(1.5 * (1 << 30))
    assert parse_size("512MiB") == 512 << 20 and parse_size("3 gb") == 3 << 30
    with pytest.raises(ValueError, match="--max-size"):
        parse_size("lots")


def _artifact(cache: Cache, stage: str, fp: str, size: int, used: float) -> None:
    with cache.writing(stage, fp) as out:
        (out / "data.bin").write_bytes(b"x" * size)
    os.utime(cache.artifact_path(stage, fp) / "_manifest.json", (used, used))


def test_gc_evicts_least_recently_used_first(tmp_path):
    cache = Cache(tmp_path)
    _artifact(cache, "prune", "old", 4000, 1000)
    _artifact(cache, "prune", "new", 4000, 3000)
    cache.put_blob("hessian", "mid", {"h": torch.zeros(1000)})
    os.utime(tmp_path / "blobs" / "hessian" / "mid.json", (2000, 2000))
    (tmp_path / "artifacts" / "prune" / ".dead.x1.tmp").mkdir()
    sizes = {i.fingerprint: i.size_bytes for i in entries(cache)}
    budget = sizes["new"] + sizes["mid"]
    removed, freed, kept = gc(cache, budget)
    assert removed == 2 and kept == budget  # the stale temp dir and the oldest artifact
    assert {i.fingerprint for i in entries(cache)} == {"new", "mid"}
    gc(cache, sizes["new"])
    assert {i.fingerprint for i in entries(cache)} == {"new"}


def test_gc_skips_entries_a_writer_holds(tmp_path):
    cache = Cache(tmp_path)
    _artifact(cache, "prune", "busy", 1000, 1000)
    with Cache(tmp_path).lock("artifact", "prune", "busy"):
        assert gc(cache, 0)[0] == 0
    assert gc(cache, 0)[0] == 1
