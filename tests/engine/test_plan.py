import copy

from standin import STAGES

from rac.engine.cache import Cache
from rac.engine.plan import build_plan, invalidated_stages, read_key


def recipe(tmp_path, **changes):
    base = {"gen": {"n": 4}, "scale": {"factor": 2}, "report": {"on": True}, "counts": str(tmp_path / "c")}
    for key, value in changes.items():
        section, field = key.split("__")
        base[section][field] = value
    return base


def fps(tmp_path, r, identity="model-a"):
    return {p.name: p.fingerprint for p in build_plan(r, Cache(tmp_path / "cache"), identity, STAGES)}


def test_fingerprints_change_exactly_when_a_read_key_changes(tmp_path):
    base = fps(tmp_path, recipe(tmp_path))
    # a key only `scale` reads: gen keeps its fingerprint, scale and its downstream change
    changed = fps(tmp_path, recipe(tmp_path, scale__factor=3))
    assert changed["gen"] == base["gen"]
    assert changed["scale"] != base["scale"]
    assert changed["report"] != base["report"]
    # a key nobody reads changes nothing
    r = recipe(tmp_path)
    r["gen"]["unrelated"] = "x"
    assert fps(tmp_path, r) == base
    # an upstream change propagates
    upstream = fps(tmp_path, recipe(tmp_path, gen__n=5))
    assert all(upstream[k] != base[k] for k in base)
    # model identity is part of every fingerprint
    other = fps(tmp_path, recipe(tmp_path), identity="model-b")
    assert all(other[k] != base[k] for k in base)


def test_disabled_stage_is_left_out_and_needs_are_limited(tmp_path):
    r = recipe(tmp_path)
    del r["report"]
    plan = build_plan(r, Cache(tmp_path / "cache"), "m", STAGES)
    assert plan.names == ["gen", "scale"]
    assert plan.get("scale").needs == ("gen",)


def test_read_key_missing_and_null():
    r = {"a": {"b": None, "c": {"d": 1}}}
    assert read_key(r, "a.c.d") == 1
    assert read_key(r, "a.b") == read_key(r, "a.x.y")
    assert read_key(copy.deepcopy(r), "a.c") == {"d": 1}


def test_invalidated_stages_follow_reads_and_needs(tmp_path):
    r = recipe(tmp_path)
    assert invalidated_stages(STAGES, r, ["scale.factor"]) == ["scale", "report"]
    assert invalidated_stages(STAGES, r, ["gen.n"]) == ["gen", "scale", "report"]
    assert invalidated_stages(STAGES, r, ["report.on"]) == ["report"]
    assert invalidated_stages(STAGES, r, ["other.key"]) == []
