"""benchmarks/gpu_acceptance.sh: skips cleanly without CUDA; its verdicts follow the goals."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _verdicts():
    spec = importlib.util.spec_from_file_location("gpu_verdicts", ROOT / "benchmarks" / "gpu_verdicts.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_script_skips_without_cuda(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the real acceptance script")
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_acceptance.sh")], capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "OUT": str(tmp_path)}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [
        "VERDICT cuda: SKIP no CUDA device here (torch.cuda.is_available() is False); nothing else runs"]


def test_hessian_and_sparsegpt_verdicts(tmp_path):
    v = _verdicts()
    rates = lambda rac: {"results": [{"d": 3584, "tflops": {"rac": rac, "bf16 GEMM": 700.0}}]}  # noqa: E731
    (tmp_path / "h.json").write_text(json.dumps(rates(600.0)))
    assert v.hessian(tmp_path / "h.json").startswith("PASS rac / bf16 GEMM rate d=3584: 0.86")
    (tmp_path / "h.json").write_text(json.dumps(rates(500.0)))
    assert v.hessian(tmp_path / "h.json").startswith("FAIL")
    bench = {"ratios": {"classic/rac_grouped": 12.0}, "mean_rel_error": {"rac_grouped": 0.01, "classic": 0.0101}}
    (tmp_path / "s.json").write_text(json.dumps(bench))
    assert v.sparsegpt(tmp_path / "s.json").startswith("PASS 12.0x")
    bench["mean_rel_error"]["rac_grouped"] = 0.02  # faster but worse: not a pass
    (tmp_path / "s.json").write_text(json.dumps(bench))
    assert v.sparsegpt(tmp_path / "s.json").startswith("FAIL")
