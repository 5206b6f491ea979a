import copy

from standin import STAGES

from rac.pipeline.cache import Cache
from rac.pipeline.plan import build_plan, invalidated_stages, read_key


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


# -- complete fingerprints: seeds, data content, hub revisions, code, device; miss reasons ---------------
import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402

import pytest  # noqa: E402

from rac import ui  # noqa: E402
from rac.app import load_stages  # noqa: E402
from rac.cli import main  # noqa: E402
from rac.pipeline import inputs  # noqa: E402
from rac.pipeline.plan import InputChange  # noqa: E402
from rac.pipeline.run import execute_plan  # noqa: E402
from rac.recipe.load import load_recipe  # noqa: E402

DEPENDENT = ("rollout", "hessian", "prune", "evaluate")


def _real_recipe(tmp_path, source="{path: calib.jsonl, field: q, answer_field: a}", extra=""):
    (tmp_path / "calib.jsonl").write_text('{"q": "1 + 1?", "a": "2"}\n{"q": "2 + 2?", "a": "4"}\n')
    path = tmp_path / "r.yaml"
    path.write_text(f"""version: 1
model: {{id: smollm2-135m}}
calibration: {{kind: rac, sources: [{source}], budget: {{prompts: 2, tokens: null}}}}
prune: {{sparsity: 0.5}}
evaluate: {{tasks: [{{name: gsm8k, type: math, dataset: gsm8k_test, limit: 2}}]}}
run: {{device: cpu}}
{extra}""")
    return path


def _plan(tmp_path, recipe_path, overrides=(), resolver=None):
    recipe = load_recipe(recipe_path, list(overrides)).data
    return build_plan(recipe, Cache(tmp_path / "cache"), "model-id", load_stages(), resolver=resolver)


def _fps(plan):
    return {p.name: p.fingerprint for p in plan}


def test_cli_plan_seed_changes_only_the_evaluate_fingerprint(tmp_path, tiny_model_dir, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"version: 1\nmodel: {{id: {tiny_model_dir}}}\ncalibration: {{kind: prompt}}\n"
                      f"prune: {{sparsity: 0.5}}\nevaluate: {{tasks: [{{name: g, type: math, dataset: gsm8k_test}}]}}\n"
                      f"run: {{device: cpu}}\n")

    def shown(*overrides):
        assert main(["plan", str(recipe), *overrides]) == 0
        out = capsys.readouterr().out
        return {stage: re.search(rf"{stage}\s.*?\b([0-9a-f]{{12}})\b", out).group(1) for stage in ("prune", "evaluate")}

    seed0, seed1 = shown(), shown("run.seed=1")
    assert seed0["evaluate"] != seed1["evaluate"]
    assert seed0["prune"] == seed1["prune"]


def test_editing_a_local_calibration_file_changes_its_dependents(tmp_path, monkeypatch):
    recipe = _real_recipe(tmp_path)
    before = _fps(_plan(tmp_path, recipe))
    data = tmp_path / "calib.jsonl"
    stat = data.stat()
    data.write_text(data.read_text())  # same content, new mtime: still the same data
    assert _fps(_plan(tmp_path, recipe)) == before
    data.write_text('{"q": "1 + 1?", "a": "2"}\n{"q": "3 + 3?", "a": "6"}\n')  # edited in place, same size
    assert data.stat().st_size == stat.st_size
    after = _fps(_plan(tmp_path, recipe))
    assert all(after[s] != before[s] for s in DEPENDENT)
    # a hashed file is not hashed again while its size and mtime stay the same
    calls = []
    monkeypatch.setattr(inputs, "file_sha256", lambda p: calls.append(p) or "x")
    _plan(tmp_path, recipe)
    assert data not in calls


def test_builtin_data_sets_are_keyed_by_their_bundled_file(tmp_path, monkeypatch):
    recipe = _real_recipe(tmp_path, source="{dataset: gsm8k_train}")
    plan = _plan(tmp_path, recipe)
    assert plan.get("rollout").inputs["data"]["calibration.sources[0]"].startswith("gsm8k_train:sha256:")
    assert plan.get("evaluate").inputs["data"]["evaluate.tasks[0]"].startswith("gsm8k_test:sha256:")


def test_hub_sources_are_keyed_by_resolved_revision(tmp_path):
    recipe = _real_recipe(tmp_path, source="{path: 'hf:org/data', field: q}")
    a = _plan(tmp_path, recipe, resolver=lambda name: "rev-a")
    b = _plan(tmp_path, recipe, resolver=lambda name: "rev-b")
    assert a.get("rollout").inputs["data"]["calibration.sources[0]"] == "hf:org/data@rev-a"
    assert all(_fps(a)[s] != _fps(b)[s] for s in ("rollout", "hessian", "prune"))
    assert not a.warnings
    offline = _plan(tmp_path, recipe, resolver=lambda name: None)
    assert offline.get("rollout").inputs["data"]["calibration.sources[0]"] == "hf:org/data@unresolved"
    assert offline.warnings and all("org/data" in w and "revision" in w for w in offline.warnings)

    def unreachable(name):
        raise AssertionError("a pinned revision needs no lookup")

    pinned = _plan(tmp_path, recipe, ["calibration.sources.0.revision=abc123"], resolver=unreachable)
    assert pinned.get("rollout").inputs["data"]["calibration.sources[0]"] == "hf:org/data@abc123"
    assert not pinned.warnings


def test_default_resolver_is_offline_safe(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    inputs.resolve_hub_revision.cache_clear()
    assert inputs.resolve_hub_revision("allenai/c4") is None


def test_changing_hessian_code_changes_the_hessian_fingerprint(tmp_path, monkeypatch):
    copy_root = tmp_path / "src" / "rac"
    shutil.copytree(inputs.RAC_ROOT, copy_root, ignore=shutil.ignore_patterns("data", "__pycache__", "*.gz"))
    monkeypatch.setattr(inputs, "RAC_ROOT", copy_root)
    recipe = _real_recipe(tmp_path)
    hessian_files = {f.relative_to(copy_root).as_posix() for f in inputs.code_files("rac.stages.hessian")}
    assert "algorithms/hessian.py" in hessian_files
    before = _plan(tmp_path, recipe)
    with open(copy_root / "algorithms" / "hessian.py", "a") as f:
        f.write("\n# a change to the Hessian accumulation\n")
    after = _plan(tmp_path, recipe)
    assert _fps(after)["hessian"] != _fps(before)["hessian"]
    assert _fps(after)["rollout"] == _fps(before)["rollout"]  # rollouts do not run the Hessian code
    changes = {c.key for c in _diff(before.get("hessian").inputs, after.get("hessian").inputs)}
    assert "code.rac/algorithms/hessian.py" in changes


def _diff(a, b):
    from rac.pipeline.plan import diff_inputs

    return diff_inputs(a, b)


def test_device_kind_enters_only_timing_stages(tmp_path, monkeypatch):
    assert inputs.device_kind("cpu").startswith("cpu: ")
    recipe = _real_recipe(tmp_path)
    monkeypatch.setattr(inputs, "device_kind", lambda device: "cuda: GPU A")
    a = _fps(_plan(tmp_path, recipe))
    monkeypatch.setattr(inputs, "device_kind", lambda device: "cuda: GPU B")
    b = _fps(_plan(tmp_path, recipe))
    assert a["evaluate"] != b["evaluate"]
    assert all(a[s] == b[s] for s in ("rollout", "hessian", "prune"))


def test_plan_says_which_input_changed_since_the_cached_entry(tmp_path, capsys):
    r = recipe(tmp_path)
    cache = Cache(tmp_path / "cache")
    plan = build_plan(r, cache, "m", STAGES)
    execute_plan(plan, r, cache, tmp_path / "run", "cpu")
    assert all(p.why is None for p in build_plan(r, cache, "m", STAGES) if p.stage.cached)  # all hits
    changed = build_plan(recipe(tmp_path, gen__n=5), cache, "m", STAGES)
    assert changed.get("gen").why == [InputChange("reads.gen.n", 4, 5)]
    assert [c.key for c in changed.get("scale").why] == ["upstream.gen"]
    ui.plan_notes(changed)
    out = capsys.readouterr().out
    assert "gen misses: reads.gen.n: 4 -> 5" in out and "upstream stage changed: gen" in out
    manifest = json.loads((cache.artifact_path("gen", plan.get("gen").fingerprint) / "_manifest.json").read_text())
    assert manifest["meta"]["inputs"]["reads"] == {"gen.n": 4}


def test_first_plan_has_no_miss_reason_to_show(tmp_path, capsys):
    plan = build_plan(recipe(tmp_path), Cache(tmp_path / "cache"), "m", STAGES)
    assert plan.get("gen").why == []
    assert ui.miss_lines(plan.get("gen")) == ["no earlier cached entry of this stage"]
    ui.plan_notes(plan)
    assert "misses" not in capsys.readouterr().out


@pytest.mark.parametrize("stage", ["rollout", "hessian", "prune", "quantize", "evaluate"])
def test_every_cached_stage_hashes_its_own_code(stage):
    module = f"rac.stages.{stage}"
    files = {f.name for f in inputs.code_files(module)}
    assert f"{stage}.py" in files
    assert not any(f.parent.name == "pipeline" for f in inputs.code_files(module))


def test_generation_engines_imported_by_name_are_part_of_the_rollout_code():
    files = {f.relative_to(inputs.RAC_ROOT).as_posix() for f in inputs.code_files("rac.stages.rollout")}
    assert {"engines/hf.py", "engines/base.py", "calibration/render.py"} <= files
    assert "algorithms/hessian.py" not in files
