"""Verdict lines for benchmarks/gpu_acceptance.sh from the benchmarks' JSON (and the solver check itself).

    python benchmarks/gpu_verdicts.py hessian FILE      # rac's Hessian rate / bf16 GEMM rate (goal >= 0.8)
    python benchmarks/gpu_verdicts.py sparsegpt FILE    # classic loop time / rac time (goal >= 10x), errors
    python benchmarks/gpu_verdicts.py solver            # batched CUDA solver vs the loop: same masks
    python benchmarks/gpu_verdicts.py run RUN_DIR       # a finished run: stage times and headline metrics
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

HESSIAN_GOAL = 0.8
SPARSEGPT_GOAL = 10.0


def hessian(path: Path) -> str:
    results = json.loads(path.read_text())["results"]
    ratios = {r["d"]: r["tflops"]["rac"] / r["tflops"]["bf16 GEMM"] for r in results}
    worst = min(ratios.values())
    text = ", ".join(f"d={d}: {v:.2f}" for d, v in ratios.items())
    return f"{'PASS' if worst >= HESSIAN_GOAL else 'FAIL'} rac / bf16 GEMM rate {text} (goal >= {HESSIAN_GOAL})"


def sparsegpt(path: Path) -> str:
    data = json.loads(path.read_text())
    speedup = data["ratios"]["classic/rac_grouped"]
    err = data["mean_rel_error"]
    ok = speedup >= SPARSEGPT_GOAL and err["rac_grouped"] <= err["classic"] * 1.001
    return (f"{'PASS' if ok else 'FAIL'} {speedup:.1f}x faster per block than the classic loop (goal >= "
            f"{SPARSEGPT_GOAL:.0f}x); mean error rac {err['rac_grouped']:.5f} vs classic {err['classic']:.5f}")


def solver() -> str:
    import torch

    from rac.algorithms.sparsegpt import sparsegpt_prune

    g = torch.Generator().manual_seed(0)
    X = torch.randn(4096, 64, generator=g) @ torch.randn(64, 3584, generator=g) + 0.3 * torch.randn(4096, 3584, generator=g)
    H = (X.T @ X / X.shape[0]).cuda()
    W = (torch.randn(3584, 3584, generator=g) * 0.02).cuda()
    loop = sparsegpt_prune(W, H, sparsity=0.5, solver="loop")
    batched = sparsegpt_prune(W, H, sparsity=0.5, solver="batched")
    same = bool(torch.equal(loop.mask, batched.mask))
    diff = float((loop.weight - batched.weight).abs().max())
    line = f"{'PASS' if same and diff < 1e-3 else 'FAIL'} masks equal: {same}; max |dW| {diff:.2e}"
    print(line)
    return line


def run(run_dir: Path) -> str:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    stages = ", ".join(f"{name} {rec.get('seconds', 0):.1f}s" for name, rec in metrics["stages"].items())
    heads = []
    for task, values in (metrics.get("evaluate") or {}).items():
        for key in ("accuracy", "decode_nll", "mean_length"):
            if isinstance(values, dict) and isinstance(values.get(key), (int, float)):
                heads.append(f"{task}.{key}={values[key]:.3f}")
    return f"device {metrics['run']['device']}; {stages}; {' '.join(heads)}"


def main() -> None:
    what = sys.argv[1]
    if what == "solver":
        solver()
    elif what == "hessian":
        print(hessian(Path(sys.argv[2])))
    elif what == "sparsegpt":
        print(sparsegpt(Path(sys.argv[2])))
    elif what == "run":
        print(run(Path(sys.argv[2])))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
