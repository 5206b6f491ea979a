"""Recipe interpolation: allow-listed resolvers only; ``${oc.env:...}`` only on opt-in, never in run dirs."""

from __future__ import annotations

import pytest
import yaml
from omegaconf import OmegaConf

from rac.recipe import load_recipe
from rac.recipe.errors import RecipeError

SECRET = "hf_TOPSECRETtoken123"


def test_env_needs_opt_in_and_the_error_is_located(write, monkeypatch):
    monkeypatch.setenv("RAC_TEST_TOKEN", SECRET)
    write("r.yaml", "version: 1\nmodel: {id: x}\nrun:\n  name: ${oc.env:RAC_TEST_TOKEN}\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe("r.yaml")
    message = str(exc.value)
    assert message.startswith("r.yaml:4:9: $.run.name: cannot resolve '${oc.env:RAC_TEST_TOKEN}'")
    assert "run.allow_env: true" in message and SECRET not in message


def test_env_values_are_never_written_resolved_into_run_dirs(write, monkeypatch, tmp_path):
    from rac.pipeline.run import write_run_inputs

    monkeypatch.setenv("RAC_TEST_TOKEN", SECRET)
    monkeypatch.setenv("RAC_TEST_SEED", "7")
    write("r.yaml", """
        version: 1
        model: {id: x}
        calibration:
          sources: [{path: "hf:org/data", field: "q-${oc.env:RAC_TEST_TOKEN}"}]
          rollout: {engine: "${calibration.sources[0].field}"}
        run:
          allow_env: true
          seed: ${oc.decode:${oc.env:RAC_TEST_SEED}}
        """)
    loaded = load_recipe("r.yaml")
    assert loaded.data["calibration"]["sources"][0]["field"] == f"q-{SECRET}"  # usable in memory
    assert loaded.data["run"]["seed"] == 7
    run_dir = tmp_path / "run"
    write_run_inputs(run_dir, loaded, loaded.data)
    for file in run_dir.rglob("*"):
        if file.is_file():
            assert SECRET not in file.read_text(), file
    written = yaml.safe_load((run_dir / "recipe.resolved.yaml").read_text())
    assert written["calibration"]["sources"][0]["field"] == "q-${oc.env:RAC_TEST_TOKEN}"
    assert written["calibration"]["rollout"]["engine"] == "q-${oc.env:RAC_TEST_TOKEN}"  # copied via ${...}
    assert written["run"]["seed"] == "${oc.decode:${oc.env:RAC_TEST_SEED}}"


def test_allow_env_must_be_a_literal_true(write, monkeypatch):
    monkeypatch.setenv("RAC_TEST_TOKEN", SECRET)
    monkeypatch.setenv("RAC_TEST_ALLOW", "true")
    write("r.yaml", "version: 1\nmodel: {id: x}\nrun:\n  allow_env: ${oc.env:RAC_TEST_ALLOW}\n"
                    "  name: ${oc.env:RAC_TEST_TOKEN}\n")
    with pytest.raises(RecipeError, match=r"r\.yaml:4:14: \$\.run\.allow_env: .*run.allow_env: true"):
        load_recipe("r.yaml")


@pytest.mark.filterwarnings("ignore:register_new_resolver")
def test_resolvers_outside_the_allow_list_never_run(write):
    calls = []
    OmegaConf.register_new_resolver("rac_test_shell", lambda arg: calls.append(arg) or "ran")
    try:
        write("r.yaml", "version: 1\nmodel: {id: x}\nrun:\n  name: ${rac_test_shell:rm -rf}\n")
        with pytest.raises(RecipeError) as exc:
            load_recipe("r.yaml")
        assert str(exc.value).startswith("r.yaml:4:9: $.run.name: cannot resolve")
        assert "resolver 'rac_test_shell' is not allowed in recipes (allowed: oc.select" in str(exc.value)
        assert calls == []
        assert OmegaConf.has_resolver("rac_test_shell")  # the global registry is left as it was
    finally:
        OmegaConf.clear_resolver("rac_test_shell")


def test_allowed_resolvers_and_plain_interpolation_still_work(write):
    write("r.yaml", """
        version: 1
        model: {id: x}
        prune: {sparsity: "${oc.decode:'0.25'}"}
        run: {name: "${oc.select:run.nope,fallback}-${model.id}"}
        """)
    data = load_recipe("r.yaml").data
    assert data["prune"]["sparsity"] == 0.25 and data["run"]["name"] == "fallback-x"


def test_allow_env_validates(write, monkeypatch):
    from rac.recipe.validate import load_and_validate

    monkeypatch.setenv("RAC_TEST_DIR", "outdir")
    write("r.yaml", "version: 1\nmodel: {id: x}\nrun: {allow_env: true, output_dir: '${oc.env:RAC_TEST_DIR}'}\n")
    assert load_and_validate("r.yaml").data["run"]["output_dir"] == "outdir"
