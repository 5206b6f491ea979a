"""`rac report --paper table4`: rows dense baseline + scope x (RAC, Prompt+FP8, RAC+FP8); accuracy, tokens,
prefill / decode tokens/s, speed-up vs dense and the kernel that ran, per throughput task."""

from __future__ import annotations

import copy

from synthetic import (
    DENSE,
    FP8,
    MLP24_ALL,
    MLP24_FIRST,
    MLP24_FIRST_LAST,
    MODEL_14B,
    PAPER_BASE,
    PROMPT,
    RAC,
    math_metrics,
    merge,
    throughput_metrics,
    write_run,
)

from rac.report.paper import render_paper
from rac.report.runs import collect_runs

BASE = merge(PAPER_BASE, MODEL_14B)


def _throughput(decode: float, kernel: str, fallback: bool = False) -> dict:
    metrics = copy.deepcopy(throughput_metrics(decode))
    compressed = metrics["throughput"]["variants"]["compressed"]
    compressed["kernel"] = kernel
    if fallback:
        compressed.update(fallback_from="2:4+fp8", note="torchao refused")
    vllm = {"type": "throughput", "status": "ok", "backend": "vllm",
            "variants": {"dense": {"generation_tokens_per_s": 1000.0, "kernel": "none"},
                         "compressed": {"generation_tokens_per_s": decode * 0.7, "kernel": kernel}},
            "speedup": {"generation": decode * 0.7 / 1000.0}}
    return {**metrics, "throughput_vllm": vllm}


def test_table4_rows_columns_speedups_and_kernels(tmp_path):
    root = tmp_path / "table4_2of4_fp8"
    dense = _throughput(1426.0, "none")
    dense = {k: {**v, "variants": {"dense": v["variants"]["dense"]}, "speedup": {}} for k, v in dense.items()}
    write_run(root, "dense", merge(BASE, DENSE), dense)
    cells = {"rac_all": ((RAC, MLP24_ALL), 0.896, 1740.0, "2:4"),
             "rac_fp8_first": ((RAC, MLP24_FIRST, FP8), 0.950, 1532.0, "fp8"),
             "prompt_fp8_first": ((PROMPT, MLP24_FIRST, FP8), 0.952, 1532.0, "2:4+fp8"),
             "rac_first": ((RAC, MLP24_FIRST), 0.950, 1532.0, "2:4"),
             "rac_first_last": ((RAC, MLP24_FIRST_LAST), 0.940, 1561.0, "2:4")}
    for name, (overlays, acc, decode, kernel) in cells.items():
        write_run(root, name, merge(BASE, *overlays),
                  {**math_metrics(acc), **_throughput(decode, kernel, fallback=name == "rac_fp8_first")})
    table, _ = render_paper("table4", collect_runs(root), None)
    assert table.columns == ["Scope", "Calibration", "Accuracy ± SE", "Tokens",
                             "prefill tok/s [throughput]", "decode tok/s [throughput]",
                             "speed-up vs dense (prefill / decode) [throughput]", "kernel [throughput]",
                             "gen tok/s [throughput_vllm]", "speed-up vs dense [throughput_vllm]",
                             "kernel [throughput_vllm]"]
    assert [row[:2] for row in table.rows] == [
        ["Dense baseline", "—"], ["2:4 MLP first third", "RAC"], ["2:4 MLP first third", "Prompt+FP8"],
        ["2:4 MLP first third", "RAC+FP8"], ["2:4 MLP first+last third", "RAC"], ["2:4 MLP all blocks", "RAC"]]
    assert table.rows[0][2:] == ["— (not measured)", "— (not measured)", "9000", "1426", "1.00× / 1.00×",
                                 "torch: dense GEMMs", "1000", "1.00×", "vllm: dense GEMMs"]
    all_blocks = table.rows[5]
    assert all_blocks[2:] == ["0.896 ± 0.014", "4000", "9000", "1740", "1.00× / 1.22×", "torch: 2:4", "1218",
                              "1.22×", "vllm: 2:4"]
    assert table.rows[3][7] == "torch: fp8 (fallback from 2:4+fp8)"
    assert table.best[2][2] and table.best[5][5] and not table.best[1][5]
    assert any("RAC+FP8 [throughput]: torchao refused" in note for note in table.notes)
