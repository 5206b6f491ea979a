"""Fixtures for the report tests: synthetic run directories shaped like the paper's tables."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from synthetic import C4, DENSE, PAPER_BASE, PROMPT, RAC, _probe_arrays, math_metrics, merge, write_run  # noqa: E402


@pytest.fixture()
def probe_arrays():
    """Factory: synthetic per-token probe arrays of 3 problems with errors scaled by ``scale``."""
    return _probe_arrays


@pytest.fixture()
def table1_dir(tmp_path) -> Path:
    """Paper Table 1 for 7B: dense, and C4 / prompt / RAC at 30% and 50% (MATH-500 + probe)."""
    root = tmp_path / "table1"
    acc = {("30", "c4"): 0.80, ("30", "prompt"): 0.84, ("30", "rac"): 0.90,
           ("50", "c4"): 0.74, ("50", "prompt"): 0.80, ("50", "rac"): 0.90}
    overlays = {"c4": C4, "prompt": PROMPT, "rac": RAC}
    scale = {"c4": 1.5, "prompt": 1.2, "rac": 1.0}
    write_run(root, "dense_0a", merge(PAPER_BASE, DENSE), math_metrics(0.936, minutes=23.3), probe_scale=0.0)
    for (sparsity, kind), value in acc.items():
        recipe = merge(PAPER_BASE, overlays[kind], {"prune": {"sparsity": int(sparsity) / 100}})
        write_run(root, f"{kind}_{sparsity}", recipe, math_metrics(value, minutes=30 - 10 * value),
                  probe_scale=scale[kind], seed=0 if kind == "rac" else 1)
    return root
