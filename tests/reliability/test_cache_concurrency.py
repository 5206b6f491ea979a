"""Concurrent runs on one cache: one writer per fingerprint, readers never see a half-replaced
artifact, and a full disk in any cache writer leaves nothing partial and loses nothing."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

import pytest
import torch

from rac.pipeline.cache import Cache, CacheWriteError
from rac.pipeline.stage import Stage

sys.path.insert(0, str(Path(__file__).parents[1] / "pipeline"))
from standin import loaded  # noqa: E402

FORK = multiprocessing.get_context("fork")


def _slow_gen(ctx) -> dict:
    """A stand-in stage slow enough for two runs to overlap; counts its executions."""
    counts = Path(ctx.recipe["counts"])
    (counts / f"gen-{os.getpid()}-{time.time_ns()}").touch()
    for i in range(20):
        (ctx.out_dir / f"part-{i}.txt").write_text(str(i) * 1000)
    time.sleep(0.4)
    return {"n": 20}


SLOW = (Stage("gen", needs=(), reads=("gen",), version="1", run=_slow_gen),)


def _run_in_child(root: str, run_dir: str, recipe: dict, barrier, results) -> None:
    from rac.pipeline.run import run_recipe

    barrier.wait()
    try:
        result = run_recipe(loaded(recipe), SLOW, "m", Cache(root), Path(run_dir))
        results.put(("ok", result.metrics["stages"]["gen"]["status"]))
    except BaseException as exc:  # reported to the test, not swallowed
        results.put(("error", f"{type(exc).__name__}: {exc}"))


def test_two_processes_one_fingerprint_compute_once(tmp_path):
    counts = tmp_path / "counts"
    counts.mkdir()
    recipe = {"gen": {"n": 1}, "counts": str(counts), "run": {"device": "cpu"}}
    barrier, results = FORK.Barrier(2), FORK.Queue()
    procs = [FORK.Process(target=_run_in_child, args=(str(tmp_path / "c"), str(tmp_path / f"run{i}"), recipe,
                                                      barrier, results)) for i in range(2)]
    for p in procs:
        p.start()
    outcomes = sorted(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    assert [o[0] for o in outcomes] == ["ok", "ok"], outcomes
    assert len(list(counts.iterdir())) == 1, "both runs computed the same fingerprint"
    cache = Cache(tmp_path / "c")
    (info,) = cache.list("gen")
    assert info.valid and cache.lookup("gen", info.fingerprint) is not None
    assert not list((tmp_path / "c" / "artifacts" / "gen").glob(".*"))  # no temp dirs left


def _late_writer(root: str, barrier, rounds: int, results) -> None:
    cache = Cache(root)
    barrier.wait()
    try:
        for _ in range(rounds):
            with cache.writing("s", "fp") as out:
                for i in range(40):
                    (out / f"f{i}.txt").write_text(f"content {i}")
        results.put("ok")
    except BaseException as exc:
        results.put(f"{type(exc).__name__}: {exc}")


def test_reader_never_sees_a_half_replaced_artifact(tmp_path):
    cache = Cache(tmp_path / "c")
    with cache.writing("s", "fp") as out:
        for i in range(40):
            (out / f"f{i}.txt").write_text(f"content {i}")
    barrier, results = FORK.Barrier(2), FORK.Queue()
    writer = FORK.Process(target=_late_writer, args=(str(cache.root), barrier, 15, results))
    writer.start()
    barrier.wait()
    problems: list[str] = []
    deadline = time.time() + 1.5
    while time.time() < deadline and writer.is_alive():
        path = cache.lookup("s", "fp")
        if path is None:
            problems.append("miss")
            continue
        try:
            if any((path / f"f{i}.txt").read_text() != f"content {i}" for i in range(40)):
                problems.append("wrong content")
        except OSError as exc:
            problems.append(type(exc).__name__)
    writer.join(timeout=60)
    assert results.get(timeout=10) == "ok"
    assert problems == [], problems[:5]


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_in_stage_artifact_writer(tmp_path):
    cache = Cache(tmp_path / "c")
    with cache.writing("s", "other") as out:
        (out / "keep.txt").write_text("keep")
    with pytest.raises(CacheWriteError, match="rac cache gc"):
        with cache.writing("s", "fp") as out:
            (out / "half.bin").write_bytes(b"x" * 100)
            _disk_full()
    assert not cache.exists("s", "fp") and cache.lookup("s", "other") is not None
    assert sorted(p.name for p in (cache.root / "artifacts" / "s").iterdir()) == ["other"]


def test_disk_full_while_sealing(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "c")
    monkeypatch.setattr(os, "fsync", _disk_full)  # the manifest is written last, then fsynced
    with pytest.raises(CacheWriteError, match="no space left"):
        with cache.writing("s", "fp") as out:
            (out / "data.txt").write_text("complete data")
    monkeypatch.undo()
    assert not cache.exists("s", "fp")
    assert list((cache.root / "artifacts" / "s").iterdir()) == []


def test_disk_full_in_blob_writer_keeps_the_previous_blob(tmp_path, monkeypatch):
    cache = Cache(tmp_path / "c")
    old = torch.arange(16.0).reshape(4, 4)
    cache.put_blob("hessian", "k", {"h": old}, {"v": 1})
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(CacheWriteError, match="no space left"):
        cache.put_blob("hessian", "k", {"h": old * 2}, {"v": 2})
    with pytest.raises(CacheWriteError):
        cache.put_blob("hessian", "new", {"h": old}, {"v": 3})
    monkeypatch.undo()
    tensors, meta = cache.get_blob("hessian", "k")
    assert torch.equal(tensors["h"], old) and meta == {"v": 1}
    assert not cache.has_blob("hessian", "new")
    assert sorted(p.name for p in (cache.root / "blobs" / "hessian").iterdir()) == ["k.json", "k.safetensors"]


def test_disk_full_in_run_state_writer_keeps_the_previous_state(tmp_path, monkeypatch):
    from rac.pipeline.cache import atomic_write_json

    path = tmp_path / "status.json"
    atomic_write_json(path, {"gen": {"status": "done"}})
    monkeypatch.setattr(os, "fsync", _disk_full)
    with pytest.raises(OSError):
        atomic_write_json(path, {"gen": {"status": "running"}})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"gen": {"status": "done"}}
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
