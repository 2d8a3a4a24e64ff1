"""Ablation report from MLflow: a per-variant table over seeds and three plots.

An ablation is one MLflow parent run (tag `stsep.role` = "ablation") whose
child runs (tag `mlflow.parentRunId`) are the trials, one per variant and
seed. This module reads those runs back and builds one row per trial and one
row per variant, with the mean and sample standard deviation over seeds. It
writes both as CSV and Markdown, draws the plots of `stsep.analysis.plots`,
and logs the files to the parent run under `report/`.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from stsep.analysis import plots

__all__ = [
    "ABLATION_ROLE",
    "REPORT_ARTIFACT_DIR",
    "ReportError",
    "ReportFiles",
    "find_parent_run",
    "list_trial_runs",
    "log_report",
    "share_comparison_view",
    "summarize_trials",
    "summary_markdown",
    "trials_frame",
    "variant_sort_key",
    "write_report",
]

logger = logging.getLogger(__name__)

ABLATION_ROLE = "ablation"
TRIAL_ROLE = "trial"
ROLE_TAG = "stsep.role"
PARENT_TAG = "mlflow.parentRunId"
REPORT_ARTIFACT_DIR = "report"

STAGE_NAMES = ("stem", "stage1", "stage2", "stage3", "stage4")
# Metrics averaged over seeds in the summary when a trial logged them.
SUMMARY_METRICS = ("top1", "top5", "recall_at_1", "firing_rate_mean", "sops", "energy_mj")
# Experiment tag prefix under which the MLflow UI stores shared views of its runs table.
SHARED_VIEW_TAG_PREFIX = "mlflow.sharedViewState."
# Params and metrics shown as columns of the shared comparison view, when a trial logged them.
COMPARISON_PARAMS = ("variant", "stage_map", "ns_depth", "rns_depth", "temporal_state", "stsep_stages", "seed", "depth")
COMPARISON_METRICS = ("best_val_top1", "val_top1", "val_top5", "recall_at_1", "energy_mj")
# Runs are fetched in pages of this size, below MLflow 3.17's default page of 1000 runs.
PAGE_SIZE = 500


class ReportError(RuntimeError):
    """The experiment, parent run or trials needed for a report are missing."""


# --------------------------------------------------------------------------- runs


def find_parent_run(client: MlflowClient, *, experiment_name: str, parent_run_id: str | None = None) -> Run:
    """Return the ablation's parent run: `parent_run_id`, or the latest one of the experiment.

    Raises:
        ReportError: if the experiment or a parent run does not exist.
    """
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        names = sorted(exp.name for exp in client.search_experiments(max_results=50))
        raise ReportError(
            f"experiment {experiment_name!r} not found at the tracking URI; "
            f"existing experiments: {', '.join(names) or 'none'}"
        )
    if parent_run_id is not None:
        run = client.get_run(parent_run_id)
        if run.info.experiment_id != experiment.experiment_id:
            raise ReportError(
                f"run {parent_run_id} belongs to experiment {run.info.experiment_id}, not {experiment_name!r}"
            )
        return run

    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{ROLE_TAG}` = '{ABLATION_ROLE}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ReportError(
            f"experiment {experiment_name!r} has no run tagged {ROLE_TAG}={ABLATION_ROLE}; "
            "run pipelines/ablation.py first or pass --parent RUN_ID"
        )
    return runs[0]


def list_trial_runs(client: MlflowClient, parent: Run) -> list[Run]:
    """Return every child run of `parent`, across all result pages."""
    filter_string = f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'"
    runs: list[Run] = []
    page_token = None
    while True:
        page = client.search_runs(
            [parent.info.experiment_id], filter_string=filter_string, max_results=PAGE_SIZE, page_token=page_token
        )
        runs.extend(page)
        page_token = page.token
        if not page_token:
            break
    if not runs:
        raise ReportError(f"parent run {parent.info.run_id} has no child runs, so the ablation logged no trials yet")
    return runs


# ------------------------------------------------------------------------ tables


def _int_param(params: dict[str, str], key: str) -> float:
    value = params.get(key)
    if value is None or value.strip().lower() in {"", "none", "null"}:
        return math.nan
    return float(int(value))


def _temporal_state(value: str | None) -> str:
    """Map the logged `temporal_state` param to "state", "nostate" or "" (no STSep stage)."""
    normalized = (value or "").strip().lower()
    if normalized in {"true", "1", "state"}:
        return "state"
    if normalized in {"false", "0", "nostate"}:
        return "nostate"
    return ""


def _stage_set(value: str | None) -> str:
    """Normalize the logged `stsep_stages` param to its digits, such as "34", or "" for none."""
    return "".join(re.findall(r"[1-4]", value or ""))


def _top1(metrics: dict[str, float]) -> float:
    return metrics.get("best_val_top1", metrics.get("val_top1", math.nan))


def trials_frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Build one row per trial run from its params and latest metric values.

    Top-1 is the run's `best_val_top1` metric, falling back to its last
    `val_top1`. Top-5 is its last `val_top5`. `firing_rate_mean` is the mean of
    the logged per-stage firing rates. Columns for optional metrics
    (`recall_at_1`, `sops`, `energy_mj`, `test_top1_<views>`) are NaN where a
    run did not log them.
    """
    rows = []
    for run in runs:
        params, metrics = run.data.params, run.data.metrics
        variant = params.get("variant") or run.data.tags.get("mlflow.runName", "").rsplit("-seed", 1)[0]
        if not variant:
            raise ReportError(f"run {run.info.run_id} has no `variant` param, so it was not logged by the ablation")
        rates = [metrics[f"firing_rate_{name}"] for name in STAGE_NAMES if f"firing_rate_{name}" in metrics]
        row = {
            "run_id": run.info.run_id,
            "run_name": run.data.tags.get("mlflow.runName", ""),
            "status": run.info.status,
            "variant": variant,
            "stage_map": params.get("stage_map", ""),
            "ns_depth": _int_param(params, "ns_depth"),
            "rns_depth": _int_param(params, "rns_depth"),
            "temporal_state": _temporal_state(params.get("temporal_state")),
            "stsep_stages": _stage_set(params.get("stsep_stages")),
            "seed": _int_param(params, "seed"),
            "dataset": params.get("dataset", ""),
            "top1": _top1(metrics),
            "top5": metrics.get("val_top5", math.nan),
            "recall_at_1": metrics.get("recall_at_1", math.nan),
            "firing_rate_mean": float(np.mean(rates)) if rates else math.nan,
            "sops": metrics.get("sops", math.nan),
            "energy_mj": metrics.get("energy_mj", math.nan),
        }
        row.update({name: value for name, value in metrics.items() if name.startswith("test_top1_")})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise ReportError("no trial runs to report")
    frame["_order"] = frame["variant"].map(variant_sort_key)
    return frame.sort_values(["_order", "seed"]).drop(columns="_order").reset_index(drop=True)


def variant_sort_key(variant: str) -> tuple:
    """Order variants as vanilla, ns1..ns4, rns1..rns4, STSep by stage set (state first), then the rest by name."""
    match = re.fullmatch(r"(r?ns)(\d+)", variant)
    if variant == "vanilla":
        return (0, 0, variant)
    if match:
        return (1 if match.group(1) == "ns" else 2, int(match.group(2)), variant)
    match = re.fullmatch(r"stsep-s(\d+)-(state|nostate)", variant)
    if match:
        return (3, int(match.group(1)), "0" if match.group(2) == "state" else "1")
    return (4, 0, variant)


def summarize_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Aggregate trials per variant: seed count, mean and sample std (ddof=1) of the metrics.

    A variant with one seed gets a std of NaN (shown as "n/a"). Columns:
    variant, stage_map, ns_depth, rns_depth, temporal_state, stsep_stages,
    seeds, seed_list, then `<metric>_mean` and `<metric>_std` for top-1 and,
    where logged, `<metric>_mean` for the others.
    """
    metric_columns = [name for name in SUMMARY_METRICS if name in trials] + sorted(
        name for name in trials if name.startswith("test_top1_")
    )
    rows = []
    for variant, group in trials.groupby("variant", sort=False):
        first = group.iloc[0]
        row = {
            "variant": variant,
            "stage_map": first["stage_map"],
            "ns_depth": first["ns_depth"],
            "rns_depth": first["rns_depth"],
            "temporal_state": first["temporal_state"],
            "stsep_stages": first["stsep_stages"],
            "seeds": len(group),
            "seed_list": " ".join(str(int(seed)) for seed in group["seed"].dropna()),
        }
        for name in metric_columns:
            values = group[name].dropna()
            row[f"{name}_mean"] = float(values.mean()) if len(values) else math.nan
            row[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows)


def _format(value: float, spec: str) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def summary_markdown(summary: pd.DataFrame, *, title: str) -> str:
    """Render the per-variant summary as a Markdown table, omitting metrics no run logged."""
    columns = [
        ("variant", "variant", None),
        ("stage_map", "stage map", None),
        ("seeds", "seeds", None),
        ("top1", "top-1 mean ± std", ".4f"),
        ("top5", "top-5 mean", ".4f"),
        *[
            (name[: -len("_mean")], f"test top-1 {name[len('test_top1_'):-len('_mean')]} mean", ".4f")
            for name in summary.columns
            if name.startswith("test_top1_") and name.endswith("_mean")
        ],
        ("recall_at_1", "recall@1 mean", ".4f"),
        ("firing_rate_mean", "mean firing rate", ".4f"),
        # Energy per clip spans orders of magnitude between tiny test models and full ones.
        ("energy_mj", "energy (mJ/clip)", ".4g"),
    ]
    visible_columns = [
        column
        for column in columns
        if column[2] is None or summary.get(f"{column[0]}_mean", pd.Series(dtype=float)).notna().any()
    ]
    lines = [f"# {title}", "", "| " + " | ".join(header for _, header, _ in visible_columns) + " |"]
    lines.append("|" + "|".join(" --- " for _ in visible_columns) + "|")
    for _, row in summary.iterrows():
        cells = []
        for key, _, spec in visible_columns:
            if spec is None:
                cells.append(str(row[key]))
            elif key == "top1":
                cells.append(f"{_format(row['top1_mean'], spec)} ± {_format(row['top1_std'], spec)}")
            else:
                cells.append(_format(row[f"{key}_mean"], spec))
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Top-1 is each trial's best validation top-1, and ± is the sample standard deviation over seeds. "
        "Test top-1 comes from pipelines/evaluate.py with the views named in its header.",
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------ output


@dataclass(frozen=True)
class ReportFiles:
    """Paths of the files one report wrote."""

    summary_csv: Path
    summary_md: Path
    trials_csv: Path
    plots: tuple[Path, ...]


def write_report(
    trials: pd.DataFrame, *, output_dir: Path, title: str, plot_names: Sequence[str] | None = None
) -> tuple[pd.DataFrame, ReportFiles]:
    """Write the summary CSV and Markdown, the per-trial CSV and the plots to `output_dir`.

    Returns:
        The per-variant summary frame and the written paths.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = summarize_trials(trials)
    summary_csv = output_dir / "report.csv"
    summary_md = output_dir / "report.md"
    trials_csv = output_dir / "trials.csv"
    summary.to_csv(summary_csv, index=False)
    summary_md.write_text(summary_markdown(summary, title=title))
    trials.to_csv(trials_csv, index=False)

    written = []
    for name, draw in plots.REPORT_PLOTS.items():
        if plot_names is not None and name not in plot_names:
            continue
        figure = draw(summary)
        path = output_dir / f"{name}.png"
        figure.savefig(path, dpi=120, bbox_inches="tight")
        plots.close(figure)
        written.append(path)
    logger.info("wrote report for %d variants and %d trials to %s", len(summary), len(trials), output_dir)
    return summary, ReportFiles(summary_csv=summary_csv, summary_md=summary_md, trials_csv=trials_csv, plots=tuple(written))


def log_report(client: MlflowClient, parent: Run, files: ReportFiles) -> None:
    """Log the report files to the parent run under `report/`."""
    for path in (files.summary_csv, files.summary_md, files.trials_csv, *files.plots):
        client.log_artifact(parent.info.run_id, str(path), artifact_path=REPORT_ARTIFACT_DIR)
    logger.info("logged report to run %s under %s/", parent.info.run_id, REPORT_ARTIFACT_DIR)


def share_comparison_view(client: MlflowClient, parent: Run, trials: Sequence[Run]) -> str:
    """Store a view of the MLflow runs table that compares the ablation's trials, and return its path.

    The view lists the parent's child runs flat (a search filter turns off
    the nesting under the parent), sorted by variant, with the variant
    params, then the accuracy, retrieval and energy metrics, as columns.

    Returns:
        The UI path to append to the tracking server's address, such as
        `#/experiments/1/runs?viewStateShareKey=stsep-0123456789ab`.
    """
    # NOTE: the tag name and the JSON fields follow the MLflow 3.17 UI's own, undocumented format
    # for shared views. A later UI may ignore the tag, which leaves the runs intact.
    logged_params = set().union(*(run.data.params for run in trials))
    logged_metrics = set().union(*(run.data.metrics for run in trials))
    test_metrics = sorted(name for name in logged_metrics if name.startswith("test_top1_"))
    columns = [f"params.`{name}`" for name in COMPARISON_PARAMS if name in logged_params] + [
        f"metrics.`{name}`" for name in (*COMPARISON_METRICS, *test_metrics) if name in logged_metrics
    ]
    state = {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'",
        "orderByKey": "params.`variant`",
        "orderByAsc": True,
        "selectedColumns": columns,
        # Params first, in this order: the UI would otherwise put metrics first and sort params by name.
        "columnOrder": columns,
    }
    key = f"stsep-{parent.info.run_id[:12]}"
    client.set_experiment_tag(parent.info.experiment_id, f"{SHARED_VIEW_TAG_PREFIX}{key}", json.dumps(state))
    return f"#/experiments/{parent.info.experiment_id}/runs?viewStateShareKey={key}"
