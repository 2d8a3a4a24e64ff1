"""Write the report of an ablation from its MLflow runs.

Reads the ablation's parent run (the latest one of the experiment unless
`--parent` names it) and its trial runs. Writes `report.md` and `report.csv`
with one row per variant (seeds, top-1 mean and std over seeds, top-5,
recall@1, mean firing rate, energy where logged), `trials.csv` with one row
per trial, and three plots: `stagewise.png`, `stsep_temporal_state.png` and
`accuracy_vs_energy.png`. Unless `--no-log` is given, the files are logged to
the parent run under `report/`, and a view of the MLflow runs table that lists
the trials with their variant params and metrics is stored. The table and the
view's address are printed.

    python pipelines/report.py --experiment stsep-demo
    python pipelines/report.py --experiment ucf101-ablation --tracking-uri http://127.0.0.1:5000 --output reports/ucf101
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from _common import configure_logging
from stsep.analysis.report import (
    ReportError,
    find_parent_run,
    list_trial_runs,
    log_report,
    share_comparison_view,
    summary_markdown,
    trials_frame,
    write_report,
)
from stsep.config import resolve_tracking_uri

logger = logging.getLogger("stsep.pipelines.report")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", required=True, help="MLflow experiment name of the ablation")
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the working directory)",
    )
    parser.add_argument("--parent", default=None, metavar="RUN_ID", help="parent run of the ablation (default: the latest)")
    parser.add_argument(
        "--output", type=Path, default=None, help="output directory (default: reports/<experiment>/<parent run id>)"
    )
    parser.add_argument("--no-log", action="store_true", help="write the files locally without logging them to MLflow")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure_logging()
    tracking_uri = resolve_tracking_uri(args.tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)

    try:
        parent = find_parent_run(client, experiment_name=args.experiment, parent_run_id=args.parent)
        trial_runs = list_trial_runs(client, parent)
        trials = trials_frame(trial_runs)
    except (ReportError, MlflowException) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    output_dir = args.output or Path("reports") / args.experiment / parent.info.run_id
    title = f"{args.experiment}: ablation {parent.info.run_name or parent.info.run_id}"
    summary, files = write_report(trials, output_dir=output_dir, title=title)
    view_path = None
    if not args.no_log:
        log_report(client, parent, files)
        view_path = share_comparison_view(client, parent, trial_runs)

    print(summary_markdown(summary, title=title))
    print(f"report files: {output_dir}")
    for path in files.plots:
        print(f"  {path.name}")
    if view_path is not None:
        print(f"logged to run {parent.info.run_id} under report/ at {tracking_uri}")
        server = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else "<mlflow ui address>"
        print(f"compare the trials in the MLflow UI: {server}/{view_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
