"""The summary an ablation's parent run gets when its grid ends.

The table is built from the ablation's child runs in MLflow. It has one row
per variant with the mean and sample standard deviation over seeds of each
trial's best validation top-1, the mean top-5, the seeds and the epochs
trained, written as ``summary.csv`` and ``summary.md``. The stage-wise
ablation plot ``ablation_plot.png`` shows top-1 against the number of
non-stateful stages: NS and rNS lines share the vanilla and fully
non-stateful points, seed standard deviations are error bars, and STSep
variants are horizontal markers. It is drawn without pyplot, so no GUI
backend is needed.
"""

from __future__ import annotations

import logging
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from stsep.analysis import plots, report

__all__ = ["SummaryFiles", "log_ablation_summary", "summarize_runs", "summary_table_markdown", "write_summary"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SummaryFiles:
    """Paths of the summary files."""

    csv: Path
    markdown: Path
    plot: Path


def summarize_runs(runs: Iterable[Any]) -> pd.DataFrame:
    """Aggregate trial runs per variant.

    Returns:
        One row per variant, in variant order: variant, stage_map, ns_depth,
        rns_depth, temporal_state, stsep_stages, seeds, seed_list,
        top1_mean, top1_std, top5_mean, top5_std, epochs.
    """
    runs = list(runs)
    trials = report.trials_frame(runs)
    epochs = {run.info.run_id: run.data.metrics.get("epoch", math.nan) for run in runs}
    trials["epochs"] = trials["run_id"].map(epochs)
    summary = report.summarize_trials(trials)
    grouped = trials.groupby("variant", sort=False)
    summary["epochs"] = summary["variant"].map(grouped["epochs"].max())
    if "top5_std" not in summary:
        summary["top5_std"] = summary["variant"].map(grouped["top5"].std(ddof=1))
    return summary


def summary_table_markdown(summary: pd.DataFrame, *, title: str) -> str:
    """Render the per-variant summary as a Markdown table."""
    lines = [
        f"# {title}",
        "",
        "| variant | seeds | best val top-1 (mean ± std) | val top-5 (mean) | epochs |",
        "| --- | --- | --- | --- | --- |",
    ]
    for _, row in summary.iterrows():
        lines.append(
            f"| {row['variant']} | {int(row['seeds'])} ({row['seed_list']}) | "
            f"{_number(row['top1_mean'])} ± {_number(row['top1_std'])} | {_number(row.get('top5_mean'))} | "
            f"{_number(row['epochs'], digits=0)} |"
        )
    lines += ["", "Top-1 is each trial's best validation top-1; ± is the sample standard deviation over seeds."]
    return "\n".join(lines) + "\n"


def write_summary(runs: Iterable[Any], *, output_dir: Path, title: str) -> tuple[pd.DataFrame, SummaryFiles]:
    """Write ``summary.csv``, ``summary.md`` and ``ablation_plot.png`` to `output_dir`."""
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_runs(runs)
    files = SummaryFiles(
        csv=output_dir / "summary.csv", markdown=output_dir / "summary.md", plot=output_dir / "ablation_plot.png"
    )
    summary.to_csv(files.csv, index=False)
    files.markdown.write_text(summary_table_markdown(summary, title=title))
    figure = plots.plot_stagewise(summary)
    figure.savefig(files.plot, dpi=120, bbox_inches="tight")
    plots.close(figure)
    return summary, files


def log_ablation_summary(*, tracking_uri: str, experiment_id: str, ablation_id: str, parent_run_id: str) -> pd.DataFrame:
    """Summarize an ablation's child runs and log the files to its parent run.

    Returns:
        The per-variant summary.

    Raises:
        stsep.analysis.report.ReportError: When the ablation has no trial runs.
    """
    from stsep.tracking import RunLogger, list_trial_runs

    runs = list_trial_runs(tracking_uri=tracking_uri, experiment_id=experiment_id, ablation_id=ablation_id)
    parent = RunLogger(tracking_uri=tracking_uri, run_id=parent_run_id, experiment_id=experiment_id)
    with tempfile.TemporaryDirectory() as directory:
        summary, files = write_summary(runs, output_dir=Path(directory), title=f"Ablation {ablation_id}")
        for path in (files.csv, files.markdown, files.plot):
            parent.log_artifact(path)
    logger.info("Logged the summary of %d trials (%d variants) to run %s", len(runs), len(summary), parent_run_id)
    return summary


def _number(value: Any, *, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{float(value):.{digits}f}"
