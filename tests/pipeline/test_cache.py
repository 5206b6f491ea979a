import torch

from rac.pipeline.cache import Cache


def test_artifact_roundtrip_and_listing(tmp_path):
    cache = Cache(tmp_path)
    with cache.writing("s", "abc123") as out:
        (out / "x.txt").write_text("hello")
        (out / "sub").mkdir()
        (out / "sub" / "y.txt").write_text("world")
    assert cache.lookup("s", "abc123") == cache.artifact_path("s", "abc123")
    infos = cache.list()
    assert [(i.stage, i.fingerprint, i.valid) for i in infos] == [("s", "abc123", True)]
    assert cache.remove("s", "abc") == 1 and cache.lookup("s", "abc123") is None


def test_interrupted_write_leaves_nothing(tmp_path):
    cache = Cache(tmp_path)
    try:
        with cache.writing("s", "fp") as out:
            (out / "x.txt").write_text("partial")
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert not cache.exists("s", "fp")
    assert list((tmp_path / "artifacts" / "s").iterdir()) == []


def test_truncated_file_is_a_miss(tmp_path):
    cache = Cache(tmp_path)
    with cache.writing("s", "fp") as out:
        (out / "x.bin").write_bytes(b"0123456789")
    (cache.artifact_path("s", "fp") / "x.bin").write_bytes(b"01234")
    assert cache.lookup("s", "fp") is None
    assert not cache.artifact_path("s", "fp").exists()


def test_blobs_roundtrip_and_corruption(tmp_path):
    cache = Cache(tmp_path)
    h = torch.randn(4, 4)
    cache.put_blob("hessian", "k1", {"attn_in": h}, {"tokens": 10})
    tensors, meta = cache.get_blob("hessian", "k1")
    assert torch.equal(tensors["attn_in"], h) and meta == {"tokens": 10}
    path = tmp_path / "blobs" / "hessian" / "k1.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert cache.get_blob("hessian", "k1") is None
    assert not cache.has_blob("hessian", "k1")


def test_manifest_without_files_is_a_miss(tmp_path):
    import json

    cache = Cache(tmp_path)
    path = cache.artifact_path("s", "fp")
    path.mkdir(parents=True)
    (path / "_manifest.json").write_text(json.dumps({"files": {}}))
    assert not cache.exists("s", "fp")
    assert cache.lookup("s", "fp") is None and not path.exists()


def test_late_writer_keeps_the_valid_entry(tmp_path):
    cache = Cache(tmp_path)
    with cache.writing("s", "fp") as out:
        (out / "x.txt").write_text("first")
    inode = cache.artifact_path("s", "fp").stat().st_ino
    with cache.writing("s", "fp") as out:
        (out / "x.txt").write_text("second")
    final = cache.artifact_path("s", "fp")
    assert final.stat().st_ino == inode and (final / "x.txt").read_text() == "first"
    assert [p.name for p in final.parent.iterdir()] == ["fp"]


def test_corrupt_entry_is_replaced_by_rename_not_deleted_in_place(tmp_path, monkeypatch):
    import rac.pipeline.cache as cache_mod

    cache = Cache(tmp_path)
    with cache.writing("s", "fp") as out:
        (out / "x.txt").write_text("good")
    final = cache.artifact_path("s", "fp")
    (final / "x.txt").write_text("bad")
    deleted = []
    real = cache_mod.safe_rmtree
    monkeypatch.setattr(cache_mod, "safe_rmtree", lambda p, root: (deleted.append(p), real(p, root)))
    with cache.writing("s", "fp") as out:
        (out / "x.txt").write_text("good")
    assert cache.lookup("s", "fp") == final and final not in deleted
    assert all(p.name.endswith(".tmp") for p in deleted)


def test_stale_temp_entries_are_listed_and_cleaned_unless_locked(tmp_path):
    from rac.pipeline.housekeeping import entries

    cache = Cache(tmp_path)
    stage_dir = tmp_path / "artifacts" / "s"
    (stage_dir / ".dead.abc123.tmp").mkdir(parents=True)  # a writer killed with SIGKILL
    (stage_dir / ".busy.def456.tmp").mkdir()
    (tmp_path / "blobs" / "hessian").mkdir(parents=True)
    (tmp_path / "blobs" / "hessian" / ".k1.0a1b2c3d.data.tmp").write_bytes(b"half")
    partial = {(i.fingerprint, i.held) for i in entries(cache) if i.kind == "partial"}
    assert partial == {("dead", False), ("busy", False), ("k1", False)}
    with cache.lock("artifact", "s", "busy"):  # another writer at work
        assert {i.fingerprint for i in entries(cache) if i.held} == {"busy"}
        assert cache.clean_stale(stage_dir) == 1
    assert [p.name for p in stage_dir.iterdir()] == [".busy.def456.tmp"]
    with cache.writing("s", "busy") as out:  # the next writer of that key removes its leftovers
        (out / "x").write_text("x")
    assert [p.name for p in stage_dir.iterdir()] == ["busy"]
    assert cache.remove() == 2 and list(stage_dir.iterdir()) == []
    assert not (tmp_path / "blobs" / "hessian" / ".k1.0a1b2c3d.data.tmp").exists()


def test_remove_covers_blobs_and_refuses_paths(tmp_path):
    import pytest

    from rac.pipeline.paths import UnsafePathError

    cache = Cache(tmp_path / "c")
    cache.put_blob("hessian", "aa11", {"h": torch.ones(2)})
    cache.put_blob("probe_dense", "bb22", {"p": torch.ones(2)})
    with cache.writing("hessian", "cc33") as out:
        (out / "index.json").write_text("{}")
    assert {(i.kind, i.stage) for i in cache.list()} == {("artifact", "hessian")}
    assert cache.remove("hessian") == 2 and not cache.has_blob("hessian", "aa11")
    assert cache.has_blob("probe_dense", "bb22")
    (tmp_path / "sibling").mkdir()
    for bad in ("../..", "..", "/", "a/../.."):
        with pytest.raises(UnsafePathError):
            cache.remove(bad)
    assert (tmp_path / "sibling").is_dir() and cache.has_blob("probe_dense", "bb22")


def test_lookup_records_last_use(tmp_path):
    import os

    cache = Cache(tmp_path)
    with cache.writing("s", "fp") as out:
        (out / "x").write_text("x")
    manifest = cache.artifact_path("s", "fp") / "_manifest.json"
    os.utime(manifest, (1000, 1000))
    assert cache.list()[0].last_used == 1000
    cache.lookup("s", "fp")
    assert cache.list()[0].last_used > 1000
