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

from rac.report.cells import FILL, Cell, Layout, arrange
from rac.report.labels import compression_value
from rac.report.runs import ReportError, RunRecord, primary_task

COLORS = {"C4": "tab:gray", "prompt": "tab:orange", "RAC": "tab:blue"}


def _family(label: str) -> str:
    """Plain unstructured sparsity ("50%", "50% Wanda") lines up along x; anything else is its own line."""
    head, _, rest = label.partition(" ")
    return rest if head.endswith("%") and "+" not in rest else label


def _lines(layout: Layout) -> dict[str, dict[tuple, dict[float, Cell]]]:
    """model -> line (calibration, other row labels, compression family) -> sparsity -> cell."""
    panels: dict[str, dict[tuple, dict[float, Cell]]] = {}
    baselines: list[Cell] = []
    for cell in layout.cells:
        if cell.row[1] == "dense":
            baselines.append(cell)
            continue
        line = (cell.column if cell.column != FILL else "", cell.row[2:], _family(cell.row[1]))
        panels.setdefault(cell.row[0], {}).setdefault(line, {})[compression_value(cell.runs[0].recipe)] = cell
    for cell in baselines:  # the dense run joins every line of its model (same other labels) at x = 0
        for line, by_x in panels.get(cell.row[0], {}).items():
            if line[1] == cell.row[2:] and cell.column in (FILL, line[0]):
                by_x.setdefault(0.0, cell)
    return panels


def _mean_se(cell: Cell, task: str, key: str, se_key: str | None) -> tuple[float, float] | None:
    values = [float(v) for r in cell.runs if (v := (r.evaluate.get(task) or {}).get(key)) is not None]
    if not values:
        return None
    if len(values) == 1:
        se = (cell.runs[0].evaluate.get(task) or {}).get(se_key) if se_key else None
        return values[0], float(se or 0.0)
    mean = sum(values) / len(values)
    return mean, float(np.std(values, ddof=1) / np.sqrt(len(values)))


def plot_metric_vs_sparsity(layout: Layout, task: str, key: str, ylabel: str, out: Path,
                            se_key: str | None = None) -> Path | None:
    """One panel per model, one line per calibration (and other row labels); dense joins at x = 0."""
    panels = _lines(layout)
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    drawn = False
    for ax, (model, lines) in zip(axes[0], panels.items()):
        for (kind, others, family), by_x in lines.items():
            points = [(x, v) for x in sorted(by_x) if (v := _mean_se(by_x[x], task, key, se_key)) is not None]
            if not points:
                continue
            label = " / ".join(p for p in (kind, *others, family) if p)
            ax.errorbar([100 * x for x, _ in points], [v[0] for _, v in points], yerr=[v[1] for _, v in points],
                        marker="o", capsize=3, label=label, color=COLORS.get(kind.split(" ")[0]))
            drawn = True
        ax.set_title(model)
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(title="calibration", fontsize=7)
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


def write_plots(records: list[RunRecord], out_dir: Path, aggregate: tuple[str, ...] = ()) -> list[Path]:
    """accuracy_vs_sparsity.png, length_vs_sparsity.png and one fidelity heatmap per row and pair."""
    written: list[Path] = []
    layout = arrange(records, aggregate)
    task = primary_task(records)
    if task:
        for key, ylabel, name, se in (("accuracy", "accuracy", "accuracy_vs_sparsity.png", "accuracy_se"),
                                      ("mean_length", "mean generated tokens", "length_vs_sparsity.png", None)):
            path = plot_metric_vs_sparsity(layout, task, key, ylabel, out_dir / name, se)
            if path:
                written.append(path)
    probe = primary_task(records, ("probe",))
    if not probe:
        return written
    rows: dict[tuple[str, ...], dict[str, Cell]] = {}
    for cell in layout.cells:
        if len(cell.runs) == 1 and cell.column != FILL:
            rows.setdefault(cell.row, {})[cell.column] = cell
    for row, by_kind in rows.items():
        for kind_b in [k for k in by_kind if k.startswith("RAC")]:
            for kind_a in [k for k in by_kind if not k.startswith("RAC")]:
                arrays_a, arrays_b = by_kind[kind_a].runs[0].probe_arrays(probe), by_kind[kind_b].runs[0].probe_arrays(probe)
                if arrays_a is None or arrays_b is None:
                    continue
                name = "_".join(_slug(part) for part in (*row, kind_a, "vs", kind_b))
                written.append(plot_error_ratio(arrays_a, arrays_b, kind_a, kind_b, out_dir / f"fidelity_{name}.png",
                                                f"{' / '.join(row)}: error ratio {kind_a} / {kind_b}"))
    return written
