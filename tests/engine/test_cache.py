import torch

from rac.engine.cache import Cache


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
