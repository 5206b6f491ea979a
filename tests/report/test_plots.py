"""PNG plots and the error-ratio heatmap from synthetic runs."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib", reason="needs the eval extra: pip install 'rac[eval]' (matplotlib)")

from rac.report.plots import error_ratio_matrix  # noqa: E402
from rac.report.tables import ReportError, collect_runs, write_report  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def test_write_report_writes_tables_and_pngs(table1_dir, tmp_path):
    out = tmp_path / "report"
    files = write_report(table1_dir, out)
    names = {f.name for f in files}
    assert {"table.md", "table.csv", "accuracy_vs_sparsity.png", "length_vs_sparsity.png"} <= names
    heatmaps = {f.name for f in files if f.name.startswith("fidelity_")}
    model = "DeepSeek-R1-Distill-Qwen-7B"
    assert heatmaps == {f"fidelity_{model}_{s}_{k}_vs_RAC.png" for s in ("30", "50") for k in ("C4", "prompt")}
    for file in files:
        if file.suffix == ".png":
            assert file.read_bytes()[:8] == PNG and file.stat().st_size > 5000


def test_error_ratio_rows_align_at_the_boundary(probe_arrays):
    a, b = probe_arrays(2.0, 0), probe_arrays(1.0, 0)
    matrix, boundary = error_ratio_matrix(a, b)
    assert boundary == 7 and matrix.shape == (3, 7 + 12)
    np.testing.assert_allclose(matrix[np.isfinite(matrix)], 2.0, rtol=1e-6)
    assert np.isnan(matrix[0, :2]).all() and np.isfinite(matrix[0, 2:7]).all()  # prompt of 5 ends at boundary
    assert np.isfinite(matrix[0, 7:17]).all() and np.isnan(matrix[0, 17:]).all()


def test_error_ratio_needs_same_rollouts(probe_arrays):
    a = probe_arrays(1.0, 0)
    b = dict(a, prompt_len=a["prompt_len"] + 1)
    with pytest.raises(ReportError, match="different dense rollouts"):
        error_ratio_matrix(a, b)


def test_runs_without_probe_still_plot(table1_dir, tmp_path):
    for run in collect_runs(table1_dir):
        (run.path / "status.json").unlink()
    files = write_report(table1_dir, tmp_path / "r")
    assert not [f for f in files if f.name.startswith("fidelity_")]
