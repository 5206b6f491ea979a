"""Golden tests for recipe loading: base chains, overlays, overrides, interpolation, source maps."""

from __future__ import annotations

import os

import pytest

from rac.recipe import Location, RecipeError, load_recipe

BASE = """
version: 1
model:
  id: smollm2-135m
prune:
  sparsity: 0.5
  method: sparsegpt
evaluate:
  tasks:
    - {name: gsm8k, type: math, dataset: gsm8k_test}
    - {name: tp, type: throughput}
"""

CHILD = """
base: base.yaml
name: ${model.id}-wanda
prune:
  method: wanda
evaluate:
  limit: 4
"""


def test_base_chain_merges_and_maps_sources(write):
    write("base.yaml", BASE)
    write("sub/child.yaml", CHILD.replace("base.yaml", "../base.yaml"))
    r = load_recipe("sub/child.yaml")
    assert r.raw == {
        "version": 1, "model": {"id": "smollm2-135m"},
        "prune": {"sparsity": 0.5, "method": "wanda"},
        "evaluate": {"tasks": [{"name": "gsm8k", "type": "math", "dataset": "gsm8k_test"},
                               {"name": "tp", "type": "throughput"}], "limit": 4},
        "name": "smollm2-135m-wanda",
    }
    assert [str(f) for f in r.files] == ["base.yaml", os.path.join("sub", "child.yaml")]
    child = os.path.join("sub", "child.yaml")
    assert r.source_map["prune.method"] == Location(child, 4, 11)
    assert r.source_map["prune.sparsity"] == Location("base.yaml", 5, 13)
    assert r.source_map["evaluate.tasks[1].type"] == Location("base.yaml", 10, 24)
    assert r.source_map["name"] == Location(child, 2, 7)
    assert "base" not in r.raw and "base" not in r.data


def test_defaults_filled_in_data_not_raw(write):
    write("base.yaml", BASE)
    r = load_recipe("base.yaml")
    assert "block_size" not in r.raw["prune"]
    assert r.data["prune"]["block_size"] == 128
    assert r.data["prune"]["scopes"] == [{"name": "all", "modules": ["attn", "mlp"], "blocks": "all",
                                          "sparsity": None, "pattern": None, "method": None, "precedence": None}]
    assert r.data["evaluate"]["tasks"][0]["max_new_tokens"] is None  # null = evaluate-level value
    assert r.data["evaluate"]["tasks"][1]["repeats"] == 3
    assert r.data["calibration"]["rollout"]["vllm"]["tensor_parallel_size"] == 1
    assert r.data["run"] == {"output_dir": "runs", "name": None, "seed": 0, "device": "auto", "allow_env": False}
    assert "quantize" not in r.data


def test_null_section_removed_from_data(write):
    write("base.yaml", BASE)
    write("dense.yaml", "base: base.yaml\nprune: null\n")
    r = load_recipe("dense.yaml")
    assert r.raw["prune"] is None and "prune" not in r.data


def test_lists_are_replaced_not_merged(write):
    write("base.yaml", BASE)
    write("c.yaml", "base: base.yaml\nevaluate:\n  tasks:\n    - {name: x, type: throughput}\n")
    r = load_recipe("c.yaml")
    assert [t["name"] for t in r.raw["evaluate"]["tasks"]] == ["x"]
    assert "evaluate.tasks[1]" not in r.source_map
    assert r.source_map["evaluate.tasks[0].name"] == Location("c.yaml", 4, 14)


def test_overrides_set_add_force_delete(write):
    write("base.yaml", BASE)
    r = load_recipe("base.yaml", ["prune.sparsity=0.4", "+evaluate.limit=50", "++run.seed=7",
                                  "~evaluate.tasks[0]", "prune.block_size=64", "model.revision=null"])
    assert r.raw["prune"]["sparsity"] == 0.4
    assert r.raw["evaluate"]["limit"] == 50
    assert r.raw["run"] == {"seed": 7}
    assert [t["name"] for t in r.raw["evaluate"]["tasks"]] == ["tp"]
    assert r.raw["prune"]["block_size"] == 64  # a schema key the file left to its default
    assert r.raw["model"]["revision"] is None
    assert r.source_map["prune.sparsity"] == Location("<cli>", 1, 1)
    assert r.source_map["run.seed"] == Location("<cli>", 3, 1)
    assert r.source_map["evaluate.tasks[0].name"] == Location("base.yaml", 10, 14)  # renumbered
    assert r.overrides == ("prune.sparsity=0.4", "+evaluate.limit=50", "++run.seed=7", "~evaluate.tasks[0]",
                           "prune.block_size=64", "model.revision=null")


def test_override_values_are_yaml(write):
    write("base.yaml", BASE)
    r = load_recipe("base.yaml", ["++prune.scopes=[{name: a, blocks: '[0, 2)'}]", "prune.pattern=2:4",
                                  "++model.id=smollm2-135m", "++quantize={scheme: fp8_w8a8}"])
    assert r.raw["prune"]["scopes"] == [{"name": "a", "blocks": "[0, 2)"}]
    assert r.raw["prune"]["pattern"] == "2:4"  # not the YAML 1.1 base-60 integer 124
    assert r.source_map["prune.scopes[0].blocks"] == Location("<cli>", 1, 1)
    assert r.raw["quantize"] == {"scheme": "fp8_w8a8"}


def test_delete_whole_section(write):
    write("base.yaml", BASE)
    r = load_recipe("base.yaml", ["~prune"])
    assert "prune" not in r.raw and not any(k.startswith("prune") for k in r.source_map)


@pytest.mark.parametrize("override, message", [
    ("prune.sparsty=0.4", ("$.prune.sparsty: key 'prune.sparsty' is not in the recipe (did you mean 'sparsity'?); "
                          "use +prune.sparsty=... to add it")),
    ("+prune.sparsity=0.4", "$.prune.sparsity: key 'prune.sparsity' is already in the recipe"),
    ("~quantize", "$.quantize: cannot delete 'quantize': it is not in the recipe"),
    ("prune.sparsity", "$.prune.sparsity: override 'prune.sparsity' needs a value"),
    ("evaluate.tasks[5].limit=1", "$.evaluate.tasks[5].limit: index 5 out of range"),
    ("prune..x=1", "$: cannot parse override 'prune..x=1'"),
])
def test_override_errors_point_at_cli(write, override, message):
    write("base.yaml", BASE)
    with pytest.raises(RecipeError) as exc:
        load_recipe("base.yaml", ["run.seed=1", override])
    assert str(exc.value).startswith(f"<cli>:2:1: {message}")


def test_override_errors_all_reported(write):
    write("base.yaml", BASE)
    with pytest.raises(RecipeError) as exc:
        load_recipe("base.yaml", ["nope=1", "prune.nope=2"])
    assert [str(i.location) for i in exc.value.issues] == ["<cli>:1:1", "<cli>:2:1"]


def test_interpolation_resolves_types(write):
    write("r.yaml", """
        version: 1
        model: {id: smollm2-135m}
        prune: {sparsity: 0.3}
        calibration:
          rollout: {t_max: 100}
        evaluate:
          max_new_tokens: ${calibration.rollout.t_max}
          tasks: [{name: p, type: probe, t_max: "${evaluate.max_new_tokens}"}]
        run: {name: "s${prune.sparsity}"}
        """)
    r = load_recipe("r.yaml")
    assert r.raw["evaluate"]["max_new_tokens"] == 100
    assert r.raw["evaluate"]["tasks"][0]["t_max"] == 100
    assert r.raw["run"]["name"] == "s0.3"


def test_interpolation_error_located(write):
    write("r.yaml", "version: 1\nmodel: {id: x}\nrun:\n  name: ${model.nope}\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe("r.yaml")
    assert str(exc.value).startswith("r.yaml:4:9: $.run.name: cannot resolve '${model.nope}'")


def test_yaml_syntax_error_located(write):
    write("r.yaml", "version: 1\nmodel:\n  id: [unclosed\nrun: {}\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe("r.yaml")
    assert str(exc.value).startswith("r.yaml:4:4: $: YAML syntax error")


def test_non_mapping_file(write):
    write("r.yaml", "- a\n- b\n")
    with pytest.raises(RecipeError, match=r"^r.yaml:1:1: \$: a recipe must be a YAML mapping, got list$"):
        load_recipe("r.yaml")


def test_duplicate_keys_are_errors(write):
    write("r.yaml", "version: 1\nmodel: {id: x}\nversion: 1\n")
    with pytest.raises(RecipeError, match=r"^r.yaml:3:1: \$.version: duplicate key 'version' \(first set on line 1\)"):
        load_recipe("r.yaml")


def test_missing_base_names_including_line(write):
    write("r.yaml", "version: 1\nbase: ./gone.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe("r.yaml")
    assert str(exc.value) == "r.yaml:2:7: $: base recipe file 'gone.yaml' not found"


def test_missing_recipe_file():
    with pytest.raises(RecipeError, match=r"^nothere.yaml:1:1: \$: recipe file 'nothere.yaml' not found$"):
        load_recipe("nothere.yaml")


def test_base_cycle(write):
    write("a.yaml", "base: b.yaml\nversion: 1\n")
    write("b.yaml", "version: 1\nbase: c.yaml\n")
    write("c.yaml", "base: a.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe("a.yaml")
    assert str(exc.value) == "c.yaml:1:7: $.base: base cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml"


def test_self_cycle(write):
    write("a.yaml", "version: 1\nbase: ./a.yaml\n")
    with pytest.raises(RecipeError, match=r"^a.yaml:2:7: \$.base: base cycle: a.yaml -> a.yaml$"):
        load_recipe("a.yaml")


def test_relative_input_paths_absolutized(write, tmp_path):
    write("data/p.jsonl", '{"question": "1+1"}\n')
    write("recipes/r.yaml", """
        version: 1
        model: {id: ./models/m}
        calibration:
          sources: [{path: ../data/p.jsonl}, {path: "hf:gsm8k:main"}]
        """)
    r = load_recipe("recipes/r.yaml")
    assert r.data["calibration"]["sources"][0]["path"] == str(tmp_path / "data" / "p.jsonl")
    assert r.data["calibration"]["sources"][1]["path"] == "hf:gsm8k:main"
    assert r.data["model"]["id"] == str(tmp_path / "recipes" / "models" / "m")
    assert r.raw["calibration"]["sources"][0]["path"] == "../data/p.jsonl"


def test_overlays_merge_with_their_own_lines(write):
    write("base.yaml", BASE)
    write("ov.yaml", "# overlay\nprune:\n  sparsity: 0.7\n")
    r = load_recipe("base.yaml", ["prune.method=magnitude"], overlays=["ov.yaml"])
    assert r.raw["prune"] == {"sparsity": 0.7, "method": "magnitude"}
    assert r.source_map["prune.sparsity"] == Location("ov.yaml", 3, 13)
    assert [str(f) for f in r.files] == ["base.yaml", "ov.yaml"]
