"""SparseGPT per-module time and reconstruction error: rac (grouped / per module) vs the classic
per-column loop (as llm-compressor's `sparsify_weight` does it), side by side in one run.

    OMP_NUM_THREADS=1 python benchmarks/bench_sparsegpt.py [--device cuda] [--shapes 7b] [--pattern 2:4]

Shapes: SmolLM2-135M (hidden 576, intermediate 1536) or DeepSeek-R1-Distill-Qwen-7B (3584 / 18944).
If `llmcompressor` is importable its `sparsify_weight` is timed too (not a rac dependency).
"""

from __future__ import annotations

import argparse
import time

import torch

from rac.algorithms.sparsegpt import sparsegpt_prune, sparsegpt_prune_group

SHAPES = {
    "smollm2": dict(hidden=576, inter=1536, kv=192),
    "7b": dict(hidden=3584, inter=18944, kv=512),
}


def classic_loop(W: torch.Tensor, H: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
                 block: int = 128, damp: float = 0.01) -> torch.Tensor:
    """The reference per-column SparseGPT loop (one Cholesky per module, ~12 kernels per column)."""
    W, H = W.clone().float(), H.clone().float()
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0
    H += damp * torch.mean(torch.diag(H)) * torch.eye(H.shape[0], device=H.device)
    Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    cols = W.shape[1]
    for i1 in range(0, cols, block):
        i2 = min(i1 + block, cols)
        W1 = W[:, i1:i2].clone()
        Q1, Err1 = torch.zeros_like(W1), torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        if nm is None:
            tmp = W1**2 / torch.diag(Hinv1).reshape(1, -1) ** 2
            thresh = torch.sort(tmp.flatten())[0][int(tmp.numel() * sparsity)]
            mask1 = tmp <= thresh
        else:
            mask1 = torch.zeros_like(W1, dtype=torch.bool)
        for i in range(i2 - i1):
            w, d = W1[:, i], Hinv1[i, i]
            if nm is not None and i % nm[1] == 0:
                tmp = W1[:, i : i + nm[1]] ** 2 / torch.diag(Hinv1)[i : i + nm[1]].reshape(1, -1) ** 2
                mask1.scatter_(1, i + torch.topk(tmp, nm[1] - nm[0], dim=1, largest=False)[1], True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1).matmul(Hinv1[i, i:].unsqueeze(0))
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        W[:, i2:] -= Err1.matmul(Hinv[i1:i2, i2:])
    return W


def hessian(d: int, device: str, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(2048, 32, generator=g) @ torch.randn(32, d, generator=g) + 0.3 * torch.randn(2048, d, generator=g)
    X = X.to(device)
    return X.t() @ X / X.shape[0], X


def timed(fn, device: str) -> tuple[float, object]:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default="smollm2", choices=sorted(SHAPES))
    ap.add_argument("--pattern", default=None)
    ap.add_argument("--sparsity", type=float, default=0.5)
    args = ap.parse_args()
    s, dev = SHAPES[args.shapes], args.device
    nm = tuple(map(int, args.pattern.split(":"))) if args.pattern else None
    try:
        from llmcompressor.modifiers.pruning.sparsegpt.sgpt_sparsify import sparsify_weight  # type: ignore
    except Exception:  # noqa: BLE001 - optional comparison only
        sparsify_weight = None
    h, i, kv = s["hidden"], s["inter"], s["kv"]
    groups = {  # input key -> modules sharing that input
        "attn_in": {"q_proj": (h, h), "k_proj": (kv, h), "v_proj": (kv, h)},
        "attn_out": {"o_proj": (h, h)},
        "mlp_in": {"gate_proj": (i, h), "up_proj": (i, h)},
        "mlp_out": {"down_proj": (h, i)},
    }
    print(f"device={dev} shapes={args.shapes} pattern={args.pattern} sparsity={args.sparsity} "
          f"threads={torch.get_num_threads()} torch={torch.__version__}")
    print(f"{'module':10s} {'classic s':>10s} {'rac s':>8s} {'ratio':>6s} {'err classic':>12s} {'err rac':>10s}"
          + ("  llmc s" if sparsify_weight else ""))
    tot = {"classic": 0.0, "rac": 0.0, "group": 0.0}
    for gi, (key, mods) in enumerate(groups.items()):
        H, X = hessian(next(iter(mods.values()))[1], dev, gi)
        Ws = {n: torch.randn(*shape, generator=torch.Generator().manual_seed(7 * gi + j)).to(dev) for j, (n, shape) in enumerate(mods.items())}
        for name, W in Ws.items():
            tc, wc = timed(lambda: classic_loop(W, H, args.sparsity, nm), dev)
            tr, rr = timed(lambda: sparsegpt_prune(W, H, sparsity=args.sparsity, pattern=args.pattern), dev)
            ec = float(((W - wc) @ X.t()).pow(2).sum())
            er = float(((W - rr.weight) @ X.t()).pow(2).sum())
            tot["classic"] += tc
            tot["rac"] += tr
            line = f"{name:10s} {tc:10.3f} {tr:8.3f} {tc / tr:6.1f} {ec:12.4g} {er:10.4g}"
            if sparsify_weight is not None:
                tl, _ = timed(lambda: sparsify_weight(W.clone(), H.clone(), args.sparsity, nm[0] if nm else 0,
                                                       nm[1] if nm else 0, 128, 0.01), dev)
                line += f"  {tl:6.3f}"
            print(line)
        tg, _ = timed(lambda: sparsegpt_prune_group(list(Ws.values()), H, sparsities=args.sparsity,
                                                    patterns=[args.pattern] * len(Ws)), dev)
        tot["group"] += tg
        print(f"  {key} grouped ({'+'.join(Ws)}): {tg:.3f} s")
    print(f"per block: classic {tot['classic']:.3f} s | rac per-module {tot['rac']:.3f} s "
          f"({tot['classic'] / tot['rac']:.1f}x) | rac grouped {tot['group']:.3f} s ({tot['classic'] / tot['group']:.1f}x)")


if __name__ == "__main__":
    main()
