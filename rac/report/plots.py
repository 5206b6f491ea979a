"""PNG plots of a grid: accuracy and generated length vs sparsity, and the Figure-2 error-ratio heatmap.

The heatmap shows ``r_t = e_t(A) / e_t(B)`` (per-token last-layer L2 errors of two runs on the same
dense rollouts): rows are problems, columns token positions relative to the prompt/decode boundary
(rows aligned there, black vertical line), diverging colormap on a log scale centred at 1
(red: A has the lower error, blue: B has the lower error).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import MaxNLocator

from rac.report.tables import KIND_ORDER, ReportError, RunRecord, primary_task

COLORS = {"c4": "tab:gray", "text": "tab:gray", "prompt": "tab:orange", "rac": "tab:blue"}


def _by_model(records: list[RunRecord]) -> dict[str, list[RunRecord]]:
    models: dict[str, list[RunRecord]] = {}
    for record in records:
        models.setdefault(record.model, []).append(record)
    return models


def plot_metric_vs_sparsity(records: list[RunRecord], task: str, key: str, ylabel: str, out: Path,
                            se_key: str | None = None) -> Path | None:
    """One panel per model, one line per calibration kind (dense runs join every line at x = 0)."""
    models = _by_model(records)
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4), squeeze=False)
    drawn = False
    for ax, (model, runs) in zip(axes[0], models.items()):
        measured = [r for r in runs if (r.evaluate.get(task) or {}).get(key) is not None]
        dense = [r for r in measured if r.sparsity == "dense"]
        kinds = sorted({r.calibration for r in measured if r.sparsity != "dense"},
                       key=lambda k: KIND_ORDER.index(k) if k in KIND_ORDER else len(KIND_ORDER))
        for kind in kinds:
            by_x = {r.sparsity_value: r.evaluate[task] for r in dense + [r for r in measured if r.calibration == kind]}
            xs = sorted(by_x)
            ys = [by_x[x][key] for x in xs]
            errs = [by_x[x].get(se_key) or 0.0 for x in xs] if se_key else None
            ax.errorbar([100 * x for x in xs], ys, yerr=errs, marker="o", capsize=3, label=kind,
                        color=COLORS.get(kind))
            drawn = True
        ax.set_title(model)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(title="calibration")
    if not drawn:
        plt.close(fig)
        return None
    fig.suptitle(f"{ylabel} vs sparsity ({task})")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def error_ratio_matrix(arrays_a: dict, arrays_b: dict) -> tuple[np.ndarray, int]:
    """(rows x columns matrix of r_t aligned at the boundary, NaN padded; boundary column index)."""
    offsets, prompt_len = arrays_a["offsets"].tolist(), arrays_a["prompt_len"].tolist()
    if offsets != arrays_b["offsets"].tolist() or prompt_len != arrays_b["prompt_len"].tolist():
        raise ReportError("probe arrays of the two runs come from different dense rollouts; cannot compare")
    err_a, err_b = arrays_a["abs_error"].double().numpy(), arrays_b["abs_error"].double().numpy()
    left = max(prompt_len)
    right = max(offsets[i + 1] - offsets[i] - prompt_len[i] for i in range(len(prompt_len)))
    matrix = np.full((len(prompt_len), left + right), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = err_a / err_b
    ratio[~np.isfinite(ratio) | (ratio <= 0)] = np.nan
    for i, plen in enumerate(prompt_len):
        row = ratio[offsets[i]:offsets[i + 1]]
        matrix[i, left - plen:left - plen + len(row)] = row
    return matrix, left


def plot_error_ratio(arrays_a: dict, arrays_b: dict, label_a: str, label_b: str, out: Path, title: str = "") -> Path:
    """The Figure-2 heatmap of e_t(A) / e_t(B)."""
    matrix, boundary = error_ratio_matrix(arrays_a, arrays_b)
    finite = np.abs(np.log10(matrix[np.isfinite(matrix)]))
    span = 10 ** float(np.clip(np.percentile(finite, 98) if finite.size else 0.3, 0.05, 2.0))
    cmap = plt.get_cmap("RdBu").with_extremes(bad=(0, 0, 0, 0))  # no data: hatched background shows
    width = min(16.0, max(7.0, matrix.shape[1] / 40))
    fig, ax = plt.subplots(figsize=(width, max(2.5, 0.35 * matrix.shape[0] + 1.5)))
    extent = (-boundary - 0.5, matrix.shape[1] - boundary - 0.5, matrix.shape[0] - 0.5, -0.5)
    image = ax.imshow(np.ma.masked_invalid(matrix), aspect="auto", interpolation="nearest", cmap=cmap,
                      norm=LogNorm(vmin=1 / span, vmax=span), extent=extent)
    ax.patch.set_facecolor("white")
    ax.patch.set_hatch("///")
    ax.patch.set_edgecolor("#cccccc")
    ax.axvline(-0.5, color="black", linewidth=2)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("token position relative to the prompt/decode boundary (prompt < 0 <= decode)")
    ax.set_ylabel("problem")
    ax.set_yticks(range(matrix.shape[0]))
    ax.tick_params(axis="y", labelsize=7)
    bar = fig.colorbar(image, ax=ax, pad=0.01)
    bar.set_label(f"r_t = e_t({label_a}) / e_t({label_b})")
    ticks = [t for t in (0.1, 0.2, 0.5, 0.8, 1.0, 1.25, 2.0, 5.0, 10.0) if 1 / span <= t <= span]
    bar.set_ticks(ticks, labels=[f"{t:g}" for t in ticks])
    bar.ax.minorticks_off()
    ax.set_title((title or f"per-token last-layer error ratio {label_a} / {label_b}")
                 + f"\nblue (>1): {label_b} has lower error, red (<1): {label_a} has lower error; hatched: no token",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in text).strip("_")


def write_plots(records: list[RunRecord], out_dir: Path) -> list[Path]:
    """accuracy_vs_sparsity.png, length_vs_sparsity.png and one fidelity heatmap per row with pairs."""
    written: list[Path] = []
    task = primary_task(records)
    if task:
        for key, ylabel, name, se in (("accuracy", "accuracy", "accuracy_vs_sparsity.png", "accuracy_se"),
                                      ("mean_length", "mean generated tokens", "length_vs_sparsity.png", None)):
            path = plot_metric_vs_sparsity(records, task, key, ylabel, out_dir / name, se)
            if path:
                written.append(path)
    probe = primary_task(records, ("probe",))
    if not probe:
        return written
    cells: dict[tuple[str, str], dict[str, RunRecord]] = {}
    for record in records:
        cells.setdefault((record.model, record.sparsity), {})[record.calibration] = record
    for (model, sparsity), by_kind in cells.items():
        for kind_a, kind_b in (("prompt", "rac"), ("c4", "rac"), ("text", "rac")):
            if kind_a not in by_kind or kind_b not in by_kind:
                continue
            arrays_a, arrays_b = by_kind[kind_a].probe_arrays(probe), by_kind[kind_b].probe_arrays(probe)
            if arrays_a is None or arrays_b is None:
                continue
            out = out_dir / f"fidelity_{_slug(model)}_{_slug(sparsity)}_{kind_a}_vs_{kind_b}.png"
            written.append(plot_error_ratio(arrays_a, arrays_b, kind_a, kind_b, out,
                                            f"{model} {sparsity}: error ratio {kind_a} / {kind_b}"))
    return written
