"""Property test: mutated recipes are either valid or rejected with located RecipeErrors, never crash."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rac.recipe import RecipeError, load_and_validate

EXAMPLE = Path(__file__).parent / "data" / "smollm2_rac.yaml"  # the shared example recipe

BASE = yaml.safe_load(EXAMPLE.read_text())

SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from(["2:4", "4:2", "all", "[0, 3)", "${model.id}", "${nope}", "vllm",
                                           "c4", "./missing", "first_third", "-1", "1e-3"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=6)


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, sub in node.items():
            yield from _paths(sub, prefix + (key,))
    elif isinstance(node, list):
        for i, sub in enumerate(node):
            yield from _paths(sub, prefix + (i,))


@st.composite
def mutated(draw):
    recipe = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        paths = [p for p in _paths(recipe) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = recipe
        for tok in path[:-1]:
            parent = parent[tok]
        action = draw(st.sampled_from(["delete", "replace", "unknown_key"]))
        if action == "delete":
            del parent[path[-1]]
        elif action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(st.text(min_size=1, max_size=8))] = draw(SCALARS)
    return recipe


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                 HealthCheck.too_slow])
@given(recipe=mutated())
def test_mutations_give_valid_recipe_or_located_errors(recipe, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    try:
        loaded = load_and_validate(path)
    except RecipeError as exc:
        assert exc.issues
        assert all(i.location.file in (str(path), "<cli>") and i.location.line >= 1 for i in exc.issues)
        assert all(i.path.startswith("$") for i in exc.issues)
    else:
        assert loaded.data["version"] == 1
