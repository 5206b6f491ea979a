"""CPU mirrors of the paper's experiments (``recipes/demo/paper/``), end to end through the real CLI.

Every mirror grid runs with ``rac grid`` into one cache shared with the golden grid
(``tests/test_golden.py``, the ``demo_cache`` fixture of ``tests/conftest.py``), in the README's
order (Table 1 first). Each cell must finish with the metrics its paper table or figure needs
(accuracy +- SE, generated length and evaluation time; probe arrays for Figure 2; throughput with the
kernel that ran for Table 4; the three budgets of Table 5), the later grids must reuse the earlier
grids' rollouts, Hessians and pruned weights (cache hits), and ``rac grid --dry-run`` must name each
cell after the paper row or column it fills.

To add a check on a finished mirror (e.g. its ``rac report --paper`` layout), take the ``mirrors``
fixture: ``{grid stem: grid run directory}``; ``_cells(mirrors[stem])`` gives each cell's metrics.

Runtime (2-core AMD EPYC, 2026-11-30, CI-like run after the golden test): all nine with Table 4's two CI cells
(``TABLE4_CI_CELLS``) 333 s (Table 3: 39, Table 4: 44 of them); all ten cells of Table 4 337 s (six prunes of
10 / 20 / 30 MLP blocks, nine FP8 / 2:4 evaluations with throughput); see the README, "CPU mirrors".
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rac.cli import main

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
MIRRORS_DIR = ROOT / "recipes" / "demo" / "paper"
# the README's order: Table 1 (and its dense rows) first, so the others reuse its rollouts and Hessians
ORDER = ("table1_dense", "table1", "figure1", "figure2", "table2_dense", "table2", "table3", "table4", "table5")
# Every mirror runs in CI. Table 4 runs two of its ten cells there (`rac grid --cell`: the dense baseline and
# RAC+FP8 on the first third, 2:4 MLPs of blocks 0-9; 44 s): all ten take 337 s on a 2-core runner (six
# prunes of 10-30 MLP blocks, nine FP8 / 2:4 evaluations with throughput of two variants), which CI's 20 minutes
# do not hold beside the rest of the suite. RAC_MIRRORS=full runs all ten. The dry-run test checks every cell of
# every mirror either way.
FULL = os.environ.get("RAC_MIRRORS") == "full"
TABLE4_CI_CELLS = ("dense_baseline", "rac_fp8_first_third")


def _cells(grid_dir: Path) -> dict[str, dict]:
    """Recipe name -> {"metrics": metrics.json, "run_dir": Path} of every cell of a finished grid."""
    out: dict[str, dict] = {}
    for cell in json.loads((grid_dir / "grid.json").read_text())["cells"]:
        run_dir = Path(cell["run_dir"])
        metrics = json.loads((run_dir / "metrics.json").read_text())
        out[metrics["recipe"]["name"]] = {"metrics": metrics, "run_dir": run_dir}
    return out


@pytest.fixture(scope="module")
def mirrors(demo_cache: Path, tmp_path_factory) -> dict[str, Path]:
    """Run the mirror grids (README order; in CI two cells of Table 4) into the shared cache; {grid stem: grid run directory}."""
    out = tmp_path_factory.mktemp("mirrors")
    grids: dict[str, Path] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAC_CACHE", str(demo_cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        for stem in ORDER:
            only = [arg for cell in TABLE4_CI_CELLS for arg in ("--cell", cell)] if stem == "table4" and not FULL else []
            assert main(["grid", str(MIRRORS_DIR / f"{stem}.yaml"), "--output-dir", str(out / stem), *only]) == 0, stem
            (grid_dir,) = [p for p in (out / stem).iterdir() if (p / "grid.json").is_file()]
            grids[stem] = grid_dir
    return grids


def _artifact(run_dir: Path, stage: str) -> Path:
    """The cache artifact a cell's stage used (status.json)."""
    return Path(json.loads((run_dir / "status.json").read_text())[stage]["artifact"])


def _stage(cell: dict, stage: str) -> dict:
    return cell["metrics"]["stages"].get(stage) or {}


def _finished(grid_dir: Path, expected: set[str]) -> dict[str, dict]:
    """The grid's cells by name; every cell the mirror promises finished (status ok)."""
    cells = _cells(grid_dir)
    assert set(cells) == expected, sorted(cells)
    for name, cell in cells.items():
        assert cell["metrics"]["status"] == "ok", (name, cell["metrics"].get("failure"))
    return cells


def _accuracy_and_time(metrics: dict, task: str, problems: int, budget: int, samples: int = 1) -> None:
    """What a paper accuracy column needs: acc +- SE over the problems, generated length, evaluation time."""
    m = metrics["evaluate"][task]
    assert (m["n_problems"], m["samples"], m["max_new_tokens"]) == (problems, samples, budget), m
    assert 0.0 <= m["accuracy"] <= 1.0 and m["accuracy_se"] >= 0.0, m
    assert 0.0 < m["mean_length"] <= budget, m
    assert m["wall_seconds"] > 0.0 and m["seconds"] > 0.0, m


def _probe(metrics: dict, task: str = "probe_math500") -> dict:
    m = metrics["evaluate"][task]
    assert m["n_problems"] == 4 and 0.0 < m["mean_decode_length"] <= 32, m
    assert m["decode_nll"] > 0.0 and m["decode_error"] >= 0.0, m
    return m


def _cached(cell: dict, *stages: str) -> None:
    for stage in stages:
        assert _stage(cell, stage).get("cache_hit") is True, (stage, cell["metrics"]["stages"])


PRUNED = {f"smollm2-135m_{cal}_sparsegpt_first-blocks-{s}" for cal in ("c4", "prompt", "rac") for s in (40, 50)}


def test_table1_mirror(mirrors) -> None:
    """Dense row + C4 / prompt-only / RAC at 40 and 50%: acc +- SE, length, time and probe fidelity."""
    (dense,) = _finished(mirrors["table1_dense"], {"dense"}).values()
    cells = _finished(mirrors["table1"], PRUNED)
    for name, cell in {"dense": dense, **cells}.items():
        _accuracy_and_time(cell["metrics"], "math500", problems=4, budget=16)
        probe = _probe(cell["metrics"])
        if name != "dense":  # the pruned model reproduces the dense decoding worse than the dense one
            assert probe["decode_nll"] > dense["metrics"]["evaluate"]["probe_math500"]["decode_nll"], name
            summary = _stage(cell, "prune")["summary"]
            assert summary["mean_sparsity"] == pytest.approx(int(name[-2:]) / 100, abs=1e-3), summary
            assert summary["modules"] == 21, summary  # blocks 0-2, attn + mlp
    assert "prune" not in dense["metrics"]["stages"] or _stage(dense, "prune").get("status") != "done"
    # one rollout set for every RAC cell; the 40% and 50% cells start from the same block-0 Hessians
    rac40, rac50 = (cells[f"smollm2-135m_rac_sparsegpt_first-blocks-{s}"] for s in (40, 50))
    assert _artifact(rac40["run_dir"], "rollout") == _artifact(rac50["run_dir"], "rollout")
    assert _stage(rac40, "prune")["summary"]["hessian_hits"] + _stage(rac50, "prune")["summary"]["hessian_hits"] > 0


def test_figure1_mirror(mirrors) -> None:
    """C4 at 30 / 50 / 70%: accuracy and evaluation time per sparsity; the 50% cell is Table 1's."""
    cells = _finished(mirrors["figure1"], {f"smollm2-135m_c4_sparsegpt_first-blocks-{s}" for s in (30, 50, 70)})
    for name, cell in cells.items():
        _accuracy_and_time(cell["metrics"], "math500", problems=4, budget=16)
        assert _stage(cell, "prune")["summary"]["mean_sparsity"] == pytest.approx(int(name[-2:]) / 100, abs=1e-3)
    _cached(cells["smollm2-135m_c4_sparsegpt_first-blocks-50"], "hessian", "prune", "evaluate")
    nll = [cells[f"smollm2-135m_c4_sparsegpt_first-blocks-{s}"]["metrics"]["evaluate"]["probe_math500"]["decode_nll"]
           for s in (30, 70)]
    assert nll[0] < nll[1], nll  # 70% of blocks 0-2 removed hurts more than 30%


def test_figure2_mirror(mirrors) -> None:
    """Prompt-only vs RAC probe on MATH-500: per-token error arrays of the same dense rollouts."""
    from safetensors.torch import load_file

    names = {f"smollm2-135m_{cal}_sparsegpt_first-blocks-50" for cal in ("prompt", "rac")}
    cells = _finished(mirrors["figure2"], names)
    arrays = {}
    for name, cell in cells.items():
        _cached(cell, "hessian", "prune", "evaluate")  # Table 1's cells, read again
        metrics = _probe(cell["metrics"])
        arrays[name] = load_file(str(_artifact(cell["run_dir"], "evaluate") / metrics["arrays"]))
    prompt, rac = (arrays[f"smollm2-135m_{cal}_sparsegpt_first-blocks-50"] for cal in ("prompt", "rac"))
    assert prompt["abs_error"].shape == rac["abs_error"].shape and prompt["abs_error"].numel() > 4 * 32
    assert (prompt["offsets"] == rac["offsets"]).all() and (prompt["prompt_len"] == rac["prompt_len"]).all()
    assert not (prompt["abs_error"] == rac["abs_error"]).all()  # two different pruned models


def test_table2_mirror(mirrors) -> None:
    """LiveCodeBench-format sample graded in the sandbox (pass@1 over 2 samples +- SE), C4 / prompt-only / RAC
    with Codeforces statements as calibration prompts, and the dense row."""
    (dense,) = _finished(mirrors["table2_dense"], {"dense"}).values()
    cells = _finished(mirrors["table2"], {f"smollm2-135m_{cal}_sparsegpt_first-blocks-50"
                                          for cal in ("c4", "prompt", "rac")})
    for cell in (dense, *cells.values()):
        _accuracy_and_time(cell["metrics"], "livecodebench", problems=4, budget=16, samples=2)
        assert set(cell["metrics"]["evaluate"]) == {"livecodebench"}
    rac = cells["smollm2-135m_rac_sparsegpt_first-blocks-50"]
    rollouts = _artifact(rac["run_dir"], "rollout") / "rollouts.jsonl"
    problems = {json.loads(line)["problem"].split("\n")[0] for line in rollouts.read_text().splitlines()}
    assert problems and problems <= {"Theatre Square", "Watermelon", "Way Too Long Words"}, problems


def test_table3_mirror(mirrors) -> None:
    """On-policy (Table 1's RAC cell, all cached) vs the off-policy stand-in (bfloat16 source model)."""
    on, off = "smollm2-135m_rac_sparsegpt_first-blocks-50", "smollm2-135m_rac-from-smollm2-135m_sparsegpt_first-blocks-50"
    cells = _finished(mirrors["table3"], {on, off})
    _cached(cells[on], "rollout", "hessian", "prune", "evaluate")
    for cell in cells.values():
        _accuracy_and_time(cell["metrics"], "math500", problems=4, budget=16)
    provenance = json.loads((_artifact(cells[off]["run_dir"], "rollout") / "provenance.json").read_text())
    assert provenance["on_policy"] is False and provenance["model"]["dtype"] == "bfloat16", provenance
    assert _artifact(cells[off]["run_dir"], "rollout") != _artifact(cells[on]["run_dir"], "rollout")


def test_table4_mirror(mirrors) -> None:
    """2:4 MLP first third / first+last / all as RAC, Prompt+FP8 and RAC+FP8, plus the dense baseline:
    accuracy, and throughput per phase with the kernel that ran named."""
    scopes = ("mlp-first-2of4", "mlp-first-2of4+mlp-last-2of4", "mlp-all-2of4")
    names = {f"smollm2-135m_{row}_sparsegpt_{scope}{fp8}" for scope in scopes
             for row, fp8 in (("rac", ""), ("prompt", "_fp8"), ("rac", "_fp8"))}
    if not FULL:  # CI: TABLE4_CI_CELLS
        names = {"smollm2-135m_rac_sparsegpt_mlp-first-2of4_fp8"}
    cells = _finished(mirrors["table4"], names | {"smollm2-135m_dense"})
    expected_blocks = {"mlp-first-2of4": 10, "mlp-first-2of4+mlp-last-2of4": 20, "mlp-all-2of4": 30}
    for name, cell in cells.items():
        tasks = cell["metrics"]["evaluate"]
        for task in ("throughput_bs1", "throughput_bs4"):
            variants = tasks[task]["variants"]
            assert variants["dense"]["decode_tokens_per_s"] > 0 and variants["dense"]["prefill_tokens_per_s"] > 0
            if name != "smollm2-135m_dense":
                compressed = variants["compressed"]
                assert compressed["decode_tokens_per_s"] > 0 and isinstance(compressed["kernel"], str), compressed
                # on CPU nothing runs a real 2:4 / FP8 kernel, and the result says so
                assert compressed["kernel"] == "none" and (compressed.get("note") or compressed.get("fallback_note"))
        if name == "smollm2-135m_dense":
            assert set(tasks) == {"throughput_bs1", "throughput_bs4"} and not _stage(cell, "prune")
            continue
        _accuracy_and_time(cell["metrics"], "math500", problems=4, budget=16)
        scope = next(s for s in scopes if name.endswith(s) or name.endswith(s + "_fp8"))
        summary = _stage(cell, "prune")["summary"]
        assert summary["modules"] == 3 * expected_blocks[scope], summary  # gate, up, down per block
        assert summary["mean_sparsity"] == pytest.approx(0.5, abs=1e-3), summary
        assert (_stage(cell, "quantize").get("status") in ("done", "cached")) == name.endswith("_fp8")
    # RAC and RAC+FP8 share the pruned weights; FP8 only adds the quantize stage. Prompt+FP8 prunes on its
    # own (prompt-only) Hessians
    # the paper's layout renders from what ran (in CI two cells; the others are absent, not zero)
    assert main(["report", str(mirrors["table4"]), "--paper", "table4"]) == 0
    layout = (mirrors["table4"] / "report" / "paper_table4.md").read_text()
    assert "Dense baseline" in layout and "2:4 MLP first third" in layout and "RAC+FP8" in layout
    for scope in scopes if FULL else ():
        plain, fp8 = (cells[f"smollm2-135m_rac_sparsegpt_{scope}{q}"] for q in ("", "_fp8"))
        assert _artifact(plain["run_dir"], "prune") == _artifact(fp8["run_dir"], "prune")
        prompt = cells[f"smollm2-135m_prompt_sparsegpt_{scope}_fp8"]
        assert _artifact(prompt["run_dir"], "prune") != _artifact(plain["run_dir"], "prune")


def test_table5_mirror(mirrors) -> None:
    """Dense vs RAC-40% at budgets 16 / 4 / 2 (the paper's / 2048): accuracy, length and time per budget;
    the 16-token cells are Table 1's."""
    names = {f"smollm2-135m_{row}_max_new_tokens-{b}" for row in ("dense", "rac_sparsegpt_first-blocks-40")
             for b in (16, 4, 2)}
    cells = _finished(mirrors["table5"], names)
    for name, cell in cells.items():
        budget = int(name.rsplit("-", 1)[1])
        _accuracy_and_time(cell["metrics"], "math500", problems=4, budget=budget)
        if budget == 16:
            _cached(cell, "evaluate")
        elif "rac" in name:
            _cached(cell, "rollout", "hessian", "prune")


def test_dry_run_names_cells_after_the_papers_rows_and_columns(capsys) -> None:
    """``rac grid --dry-run`` on each mirror lists its cells, named by calibration, sparsity or scope,
    FP8 and budget, like the paper grid it mirrors."""
    expected = {
        "figure1": ["c4_sparsegpt_first-blocks-30", "c4_sparsegpt_first-blocks-50", "c4_sparsegpt_first-blocks-70"],
        "table1": [f"{cal}_sparsegpt_first-blocks-{s}" for s in (40, 50) for cal in ("c4", "prompt", "rac")],
        "table2": [f"{cal}_sparsegpt_first-blocks-50" for cal in ("c4", "prompt", "rac")],
        "table3": ["rac_sparsegpt_first-blocks-50", "rac-from-smollm2-135m_sparsegpt_first-blocks-50"],
        "table4": ["dense", "rac_sparsegpt_mlp-first-2of4", "rac_sparsegpt_mlp-first-2of4_fp8",
                   "prompt_sparsegpt_mlp-first-2of4_fp8", "rac_sparsegpt_mlp-first-2of4+mlp-last-2of4",
                   "prompt_sparsegpt_mlp-all-2of4_fp8", "rac_sparsegpt_mlp-all-2of4_fp8"],
        "table5": ["dense_max_new_tokens-16", "dense_max_new_tokens-4", "dense_max_new_tokens-2",
                   "rac_sparsegpt_first-blocks-40_max_new_tokens-16"],
    }
    for stem, names in expected.items():
        capsys.readouterr()
        assert main(["grid", "--dry-run", str(MIRRORS_DIR / f"{stem}.yaml")]) == 0, stem
        out = capsys.readouterr().out
        listed = [line.split("-> ", 1)[1].strip() for line in out.splitlines() if line.strip().startswith("name:")]
        assert [n for n in listed if n.removeprefix("smollm2-135m_") in names] and \
            all(f"smollm2-135m_{n}" in listed for n in names), (stem, listed)
