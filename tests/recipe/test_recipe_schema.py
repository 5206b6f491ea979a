"""The recipe schema itself: valid draft 2020-12, closed objects, described fields, defaults valid."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from jsonschema import Draft202012Validator

from rac.recipe import fill_defaults, recipe_schema


def _walk(node, path="#"):
    if isinstance(node, dict):
        yield path, node
        for key, sub in node.items():
            yield from _walk(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _walk(sub, f"{path}/{i}")


def test_schema_is_valid_2020_12():
    schema = recipe_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


def test_objects_closed_and_fields_described():
    for path, node in _walk(recipe_schema()):
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, sub in node["properties"].items():
                assert "description" in sub or "$ref" in sub, f"{path}/{key}"


def test_defaults_of_minimal_recipe_validate():
    full = fill_defaults({"version": 1, "model": {"id": "x"}, "prune": {},
                          "evaluate": {"tasks": [{"name": "m", "type": "math", "dataset": "gsm8k_test"}]},
                          "quantize": {}, "export": {"format": "compressed-tensors"}})
    assert list(Draft202012Validator(recipe_schema()).iter_errors(full)) == []


def test_recipe_package_never_imports_torch():
    code = (
        "import sys, rac.recipe as r\n"
        "from rac.recipe import load, validate, grid, diff, scopes, schema, checks, overrides, source, errors\n"
        f"r.load_and_validate({str(Path(__file__).parent / 'data' / 'smollm2_rac.yaml')!r})\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
