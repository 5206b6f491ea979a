"""Hessian accumulation H += X^T (w * X): rac's path vs one float32 GEMM, side by side.

    OMP_NUM_THREADS=2 python benchmarks/bench_hessian.py                 # CPU, SmolLM2-135M widths
    python benchmarks/bench_hessian.py --device cuda --shapes 7b          # GPU, R1-Distill-Qwen-7B widths

For every layer-input width ``d`` one batch of ``--rows`` activations (low-rank + noise, float32 on
CPU, bf16 on CUDA as a bf16 model produces them) is added to a float32 [d, d] Hessian ``--repeats``
times per variant; variants run alternately so load changes hit all, and the best time is kept.
Rates count the full product's FLOPs (2 n d^2), so the tiled variant can exceed the GEMM rate.

* ``float32 GEMM``: one ``addmm_`` in float32 (what llm-compressor does, and rac's CPU path before
  the tiled product).
* ``rac``: :func:`rac.models.capture.add_to_hessian`, the call the hessian and prune stages make
  (with per-token weights): on CPU the symmetric tiled product (:func:`rac.algorithms.hessian.add_gram_`),
  on CUDA bf16 products with float32 output.
* CUDA only: ``bf16 GEMM`` (``torch.mm(bf16, bf16, out_dtype=float32)``, the rate the issue's goal
  is stated against: rac should reach >= 80% of it) and ``TF32 GEMM``.

Error: max |H - H_float64| / max |H_float64|. Results: a table and ``benchmarks/results/hessian_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHAPES = {"smollm2": [576, 1536], "7b": [3584, 18944]}


def activations(rows: int, d: int, device: str, dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    """Low-rank + noise activations, like a layer input (a few dominant directions)."""
    g = torch.Generator(device=device).manual_seed(seed)
    rank = max(8, d // 16)
    x = torch.randn(rows, rank, generator=g, device=device) @ torch.randn(rank, d, generator=g, device=device)
    x = x / rank**0.5 + 0.1 * torch.randn(rows, d, generator=g, device=device)
    return x.to(dtype)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def variants(device: str) -> dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None]]:
    """name -> fn(H, x, weight) adding x's Gram into H in place."""
    from rac.models.capture import HessianSums, add_to_hessian

    def float32_gemm(H: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
        flat = x.float()
        H.addmm_(flat.t(), flat)

    def rac(H: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
        sums = HessianSums()
        sums.H["k"] = H
        add_to_hessian(sums, "k", x, w)  # adds into H in place

    found = {"float32 GEMM": float32_gemm, "rac": rac}
    if device.startswith("cuda"):

        def tf32_gemm(H: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                flat = x.float()
                H.addmm_(flat.t(), flat)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = False

        def bf16_gemm(H: torch.Tensor, x: torch.Tensor, w: torch.Tensor) -> None:
            b = x.to(torch.bfloat16)
            H.add_(torch.mm(b.t(), b, out_dtype=torch.float32))

        found.update({"TF32 GEMM": tf32_gemm, "bf16 GEMM": bf16_gemm})
    return found


def bench_width(d: int, rows: int, device: str, repeats: int) -> dict:
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    x = activations(rows, d, device, dtype)
    w = torch.ones(rows, device=device)
    exact = (lambda f: f.t() @ f)(x.double())  # on the device (float64)
    scale = float(exact.abs().max())
    fns = variants(device)
    best = {name: float("inf") for name in fns}
    errors = {}
    for name, fn in fns.items():  # warm-up and accuracy
        H = torch.zeros(d, d, device=device)
        fn(H, x, w)
        sync(device)
        errors[name] = float((H.double() - exact).abs().max()) / scale
        del H
    for _ in range(repeats):
        for name, fn in fns.items():
            H = torch.zeros(d, d, device=device)
            sync(device)
            start = time.perf_counter()
            fn(H, x, w)
            sync(device)
            best[name] = min(best[name], time.perf_counter() - start)
    flops = 2 * rows * d * d
    return {
        "d": d, "rows": rows,
        "seconds": best,
        "tflops": {name: flops / s / 1e12 for name, s in best.items()},
        "rel_error": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default=None, choices=sorted(SHAPES), help="default: smollm2 on cpu, 7b on cuda")
    ap.add_argument("--rows", type=int, default=4096, help="tokens per batch (8 x 512 in bench_e2e)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    shapes = args.shapes or ("7b" if args.device.startswith("cuda") else "smollm2")
    results = [bench_width(d, args.rows, args.device, args.repeats) for d in SHAPES[shapes]]

    from rich.console import Console
    from rich.table import Table

    names = list(results[0]["seconds"])
    table = Table(title=f"Hessian accumulation, {args.rows} rows, {args.device}, TFLOP/s (full product)")
    table.add_column("d")
    for name in names:
        table.add_column(name)
    table.add_column("rac / float32 GEMM")
    if "bf16 GEMM" in names:
        table.add_column("rac / bf16 GEMM")
    for r in results:
        rate = r["tflops"]
        cells = [str(r["d"])] + [f"{rate[n]:.3f} ({r['rel_error'][n]:.1e})" for n in names]
        cells.append(f"{rate['rac'] / rate['float32 GEMM']:.2f}x")
        if "bf16 GEMM" in names:
            cells.append(f"{rate['rac'] / rate['bf16 GEMM']:.2f}")
        table.add_row(*cells)
    Console().print(table)
    print("cells: TFLOP/s (max relative error against float64)")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or platform.machine()
    record = {
        "date": time.strftime("%Y-%m-%d %H:%M"), "device": device_name, "torch": torch.__version__,
        "threads": torch.get_num_threads(), "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": os.getloadavg(), "results": results,
    }
    out = Path(args.out) if args.out else HERE / "results" / f"hessian_{args.device.split(':')[0]}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
