"""Plots of an ablation's per-variant summary.

Each function takes the frame of `stsep.analysis.report.summarize_trials` (one
row per variant with `top1_mean`, `top1_std`, `ns_depth`, `rns_depth`,
`stsep_stages`, `temporal_state`, and `energy_mj_mean` where logged) and
returns a Matplotlib `Figure`, so tests can read the plotted values back from
its artists. Figures are built without pyplot, so no global state or GUI
backend is involved.

- stage-wise curve: top-1 against the number of non-stateful stages 0..4,
  with NS-k (removal from the shallow end) and rNS-k (from the deep end) as
  two lines and the seed standard deviation as error bars;
- STSep temporal state: grouped bars of top-1 per STSep stage set, with the
  temporal branch stateful (LIF) or stateless (NSN);
- accuracy against energy: one labelled point per variant.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

__all__ = [
    "REPORT_PLOTS",
    "close",
    "plot_accuracy_vs_energy",
    "plot_confusion_matrix",
    "plot_stagewise",
    "plot_temporal_state",
    "stagewise_points",
]

logger = logging.getLogger(__name__)

NUM_STAGES = 4
FIGURE_SIZE = (6.4, 4.2)


def close(figure: Figure) -> None:
    """Release a figure's canvas memory (figures here are not registered with pyplot)."""
    figure.clear()


def _std(value: float) -> float:
    """Error bar length: a single-seed std (NaN) draws no bar."""
    return 0.0 if value is None or math.isnan(value) else float(value)


def stagewise_points(summary: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Select the points of the NS and rNS lines from the summary.

    A plain variant (no STSep stage) lies on the NS line at x = `ns_depth` when
    its deep stages are stateful (`rns_depth` 0) or every stage is
    non-stateful, and on the rNS line at x = `rns_depth` in the mirrored case.
    `vanilla` (x = 0) and the fully non-stateful model (x = 4) are on both.
    If two variants land on the same point (`vanilla` and `ns0`), the first in
    the summary's order is kept.

    Returns:
        `{"NS": frame, "rNS": frame}` with columns x, variant, top1_mean, top1_std, sorted by x.
    """
    plain = summary[(summary["stsep_stages"] == "") & (summary["ns_depth"] >= 0)]
    lines = {}
    for name, depth, other in (("NS", "ns_depth", "rns_depth"), ("rNS", "rns_depth", "ns_depth")):
        on_line = plain[(plain[other] == 0) | (plain[depth] == NUM_STAGES)]
        points = pd.DataFrame(
            {
                "x": on_line[depth].astype(int),
                "variant": on_line["variant"],
                "top1_mean": on_line["top1_mean"],
                "top1_std": on_line["top1_std"],
            }
        )
        duplicated = points["x"].duplicated(keep="first")
        if duplicated.any():
            logger.warning(
                "%s line: variants %s share a point with an earlier variant and are left out",
                name, ", ".join(points.loc[duplicated, "variant"]),
            )
        lines[name] = points[~duplicated].sort_values("x").reset_index(drop=True)
    return lines


def plot_stagewise(summary: pd.DataFrame) -> Figure:
    """Top-1 against the number of non-stateful stages, NS and rNS lines with seed std bars.

    STSep variants, which sit outside this axis, are drawn as dashed horizontal
    reference lines labelled with their names.
    """
    figure = Figure(figsize=FIGURE_SIZE)
    axes = figure.add_subplot()
    for (name, points), marker in zip(stagewise_points(summary).items(), ("o", "s")):
        if points.empty:
            continue
        axes.errorbar(
            points["x"],
            points["top1_mean"],
            yerr=[_std(value) for value in points["top1_std"]],
            marker=marker,
            capsize=4,
            label=f"{name}-k",
        )
    stsep = summary[summary["stsep_stages"] != ""]
    for index, (_, row) in enumerate(stsep.iterrows()):
        axes.axhline(
            row["top1_mean"], linestyle="--", linewidth=1, color=f"C{index + 2}", label=row["variant"]
        )
    axes.set_xticks(range(NUM_STAGES + 1))
    axes.set_xlabel("non-stateful stages k")
    axes.set_ylabel("top-1 (mean over seeds)")
    axes.set_title("Stage-wise removal of membrane-potential propagation")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return figure


def plot_temporal_state(summary: pd.DataFrame) -> Figure:
    """Grouped bars of top-1 per STSep stage set: temporal branch with LIF vs NSN.

    The vanilla model, when present, is a dashed reference line.
    """
    figure = Figure(figsize=FIGURE_SIZE)
    axes = figure.add_subplot()
    stsep = summary[summary["stsep_stages"] != ""]
    stage_sets = sorted(stsep["stsep_stages"].unique(), key=lambda digits: (len(digits), digits))
    width = 0.38
    positions = np.arange(len(stage_sets))
    branches = (("state", "stateful (LIF)"), ("nostate", "stateless (NSN)"))
    for offset, (state, label) in zip((-width / 2, width / 2), branches):
        heights, errors = [], []
        for stage_set in stage_sets:
            match = stsep[(stsep["stsep_stages"] == stage_set) & (stsep["temporal_state"] == state)]
            heights.append(float(match["top1_mean"].iloc[0]) if len(match) else math.nan)
            errors.append(_std(match["top1_std"].iloc[0]) if len(match) else 0.0)
        axes.bar(positions + offset, heights, width, yerr=errors, capsize=4, label=f"temporal branch {label}")
    vanilla = summary[summary["variant"] == "vanilla"]
    if len(vanilla):
        axes.axhline(float(vanilla["top1_mean"].iloc[0]), color="gray", linestyle="--", linewidth=1, label="vanilla")
    if not stage_sets:
        axes.text(0.5, 0.5, "no STSep variants in this ablation", ha="center", va="center", transform=axes.transAxes)
    axes.set_xticks(positions, [f"STSep stages {', '.join(digits)}" for digits in stage_sets])
    # Keep bars narrow when there are only one or two stage sets.
    pad = max(0.0, (2 - len(stage_sets)) / 2)
    axes.set_xlim(-0.5 - pad, len(stage_sets) - 0.5 + pad)
    axes.set_ylabel("top-1 (mean over seeds)")
    axes.set_title("STSep temporal branch: stateful vs stateless")
    axes.grid(axis="y", alpha=0.3)
    axes.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3)
    return figure


def plot_accuracy_vs_energy(summary: pd.DataFrame) -> Figure:
    """Scatter of top-1 against the estimated inference energy per clip, one labelled point per variant."""
    figure = Figure(figsize=FIGURE_SIZE)
    axes = figure.add_subplot()
    energy = summary.get("energy_mj_mean", pd.Series(math.nan, index=summary.index))
    known = summary[energy.notna()]
    axes.scatter(energy[energy.notna()], known["top1_mean"], zorder=3)
    for (_, row), value in zip(known.iterrows(), energy[energy.notna()]):
        axes.annotate(row["variant"], (value, row["top1_mean"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if known.empty:
        axes.text(
            0.5, 0.5,
            "no energy_mj metric logged;\nrun pipelines/evaluate.py --profile on the trials",
            ha="center", va="center", transform=axes.transAxes,
        )
    # Few ticks in scientific notation, so close energies of tiny models stay readable.
    axes.xaxis.set_major_locator(MaxNLocator(nbins=5))
    axes.ticklabel_format(axis="x", style="sci", scilimits=(-2, 3), useOffset=False)
    axes.set_xlabel("estimated energy per clip (mJ)")
    axes.set_ylabel("top-1 (mean over seeds)")
    axes.set_title("Accuracy against estimated energy")
    axes.grid(alpha=0.3)
    return figure


def plot_confusion_matrix(matrix: np.ndarray, class_names: list[str], *, title: str = "") -> Figure:
    """Draw a confusion matrix `[num_classes, num_classes]` (rows true classes, columns predictions).

    Class names and counts are written in the cells up to 30 classes. Larger
    matrices show the colours alone.
    """
    num_classes = matrix.shape[0]
    size = min(12.0, 2.5 + 0.35 * num_classes)
    figure = Figure(figsize=(size, size))
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes, fraction=0.046)
    if num_classes <= 30:
        axes.set_xticks(range(num_classes), class_names, rotation=90, fontsize="small")
        axes.set_yticks(range(num_classes), class_names, fontsize="small")
        for (row, column), count in np.ndenumerate(matrix):
            axes.text(column, row, str(count), ha="center", va="center", fontsize="x-small")
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    if title:
        axes.set_title(title)
    return figure


# File stem of each report plot and the function that draws it.
REPORT_PLOTS = {
    "stagewise": plot_stagewise,
    "stsep_temporal_state": plot_temporal_state,
    "accuracy_vs_energy": plot_accuracy_vs_energy,
}
