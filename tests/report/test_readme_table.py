"""The README's demo table from a demo-shaped grid (dense, C4, prompt-only, RAC)."""

from __future__ import annotations

import json

from synthetic import DENSE, merge, write_run

from rac.cli import main
from rac.report.readme import demo_table
from rac.report.runs import collect_runs

DEMO = {"model": {"id": "smollm2-135m"}, "calibration": {"kind": "rac", "sources": [{"dataset": "gsm8k_train"}]},
        "prune": {"method": "sparsegpt", "sparsity": 0.5}, "evaluate": {"max_new_tokens": 256}, "run": {"seed": 0}}
KINDS = {"c4": {"calibration": {"kind": "text", "sources": [{"dataset": "c4"}]}},
         "prompt": {"calibration": {"kind": "prompt"}}, "rac": {}}


def _demo(tmp_path, model: str = "smollm2-135m"):
    root = tmp_path / "demo"
    demo = merge(DEMO, {"model": {"id": model}})
    write_run(root, "dense", merge(demo, DENSE), {}, probe_scale=0.356)
    for (kind, overlay), (nll, seconds) in zip(KINDS.items(), ((0.952, 86.3), (0.830, 88.4), (0.655, 88.5))):
        run = write_run(root, kind, merge(demo, overlay), {"gsm8k": {"type": "math", "status": "ok", "mean_length": 200.0}},
                        probe_scale=nll)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["stages"]["prune"]["seconds"] = seconds
        (run / "metrics.json").write_text(json.dumps(metrics))
    return root


def test_demo_table_matches_the_readme_layout(tmp_path):
    text = demo_table(collect_runs(_demo(tmp_path)))
    lines = text.splitlines()
    assert lines[0] == "| smollm2-135m, 50% SparseGPT | C4 | prompt-only | RAC |"
    assert lines[2] == "| decode NLL (dense: 0.356) | 0.952 | 0.830 | **0.655** |"
    assert lines[3].startswith("| decode-position L2 error of the last hidden state | 0.95 | 0.83 | **0.66** |")
    assert lines[-1] == "| prune stage (s) | 86.3 | 88.4 | 88.5 |"
    assert "| mean generated length (gsm8k, tokens) | 200.0 | 200.0 | 200.0 |" in lines


def test_report_cli_readme_format_and_aggregate_option(tmp_path, capsys):
    root = _demo(tmp_path, model="HuggingFaceTB/SmolLM2-135M-Instruct-with-a-name-long-enough-to-wrap")
    assert main(["report", str(root), "--format", "readme"]) == 0
    lines = capsys.readouterr().out.splitlines()  # printed verbatim: no wrapping, no markup
    assert lines[0] == ("| SmolLM2-135M-Instruct-with-a-name-long-enough-to-wrap, 50% SparseGPT | C4 | prompt-only "
                        "| RAC |")
    assert "| decode NLL (dense: 0.356) | 0.952 | 0.830 | **0.655** |" in lines
    assert main(["report", str(root), "--aggregate", "no.such.key"]) == 2
    assert "--aggregate no.such.key" in capsys.readouterr().err
    assert not (root / "report").exists()  # nothing written when the table cannot be built
