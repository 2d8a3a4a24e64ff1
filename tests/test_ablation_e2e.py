"""End to end: `ray job submit` of the smoke ablation to a Ray head on loopback.

Two trials run at once and log to one SQLite store. Afterwards MLflow must
contain one parent run, one finished child run per grid point and the summary
artifacts on the parent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
SMOKE_VARIANTS = ("vanilla", "ns4", "stsep-s34-state")
# Keep the uploaded working dir to the code: no history, results or caches.
# Patterns follow .gitignore syntax: a leading slash anchors at the repository root.
UPLOAD_EXCLUDES = ["/.git", "/runs", "/mlruns", "/mlartifacts", "*.db", "/data", "/manifests", "*.parquet",
                   "__pycache__", ".pytest_cache", "/.venv", "/reports"]


def _package_size(temp_dir: str) -> int:
    packages = [path for path in Path(temp_dir).rglob("_ray_pkg_*") if path.is_dir()]
    return sum(file.stat().st_size for package in packages for file in package.rglob("*") if file.is_file())


def test_job_submit_smoke_ablation(ray_head, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    runtime_env = {"env_vars": {"MLFLOW_TRACKING_URI": uri}, "excludes": UPLOAD_EXCLUDES}

    completed = subprocess.run(
        ["ray", "job", "submit", "--address", ray_head.dashboard_url, "--working-dir", str(REPO_ROOT),
         "--runtime-env-json", json.dumps(runtime_env), "--",
         "python", "pipelines/ablation.py", "--config", "demo", "--smoke", "--name", "e2e",
         "--set", f"storage_path={tmp_path / 'runs'}"],
        capture_output=True, text=True, env=ray_head.env, timeout=900,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "succeeded" in output
    # A lock that was retried logs "retrying"; any other mention is a failure.
    lock_failures = [line for line in output.splitlines() if "database is locked" in line and "retrying" not in line]
    assert not lock_failures
    assert 0 < _package_size(ray_head.temp_dir) < 20 * 2**20

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("stsep-demo")
    parents = client.search_runs([experiment.experiment_id], filter_string="tags.`stsep.role` = 'ablation'")
    children = client.search_runs([experiment.experiment_id], filter_string="tags.`stsep.role` = 'trial'")
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert sorted(run.data.params["variant"] for run in children) == sorted(SMOKE_VARIANTS)
    for run in children:
        assert run.info.status == "FINISHED", run.data.tags["mlflow.runName"]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.tags["mlflow.runName"] == f"{run.data.params['variant']}-seed0"
        assert 0.0 <= run.data.metrics["val_top1"] <= 1.0
        assert 0.0 <= run.data.metrics["best_val_top1"] <= 1.0
        assert run.data.metrics["clips_per_second"] > 0
        assert 0.0 <= run.data.metrics["data_wait_fraction"] <= 1.0
    parent_artifacts = {item.path for item in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "ablation_plot.png", "config.yaml"} <= parent_artifacts
    summary = Path(client.download_artifacts(parent.info.run_id, "summary.md", str(tmp_path))).read_text()
    for variant in SMOKE_VARIANTS:
        assert f"| {variant} |" in summary

    # The two trials that ran at once overlapped in time.
    spans = sorted((run.info.start_time, run.info.end_time) for run in children)
    assert spans[1][0] < spans[0][1], "no two trials ran at the same time"

    # The report of this experiment agrees with the runs' own metrics.
    report_dir = tmp_path / "report"
    reported = subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / "report.py"), "--experiment", "stsep-demo",
         "--tracking-uri", uri, "--output", str(report_dir)],
        capture_output=True, text=True, timeout=300,
    )
    assert reported.returncode == 0, (reported.stdout + reported.stderr)[-4000:]
    for name in ("report.md", "report.csv", "stagewise.png", "stsep_temporal_state.png", "accuracy_vs_energy.png"):
        assert (report_dir / name).is_file(), name
    table = pd.read_csv(report_dir / "report.csv").set_index("variant")
    for run in children:
        expected = run.data.metrics["best_val_top1"]
        assert table.loc[run.data.params["variant"], "top1_mean"] == pytest.approx(expected)
    assert {"report"} <= {item.path for item in client.list_artifacts(parent.info.run_id)}


def test_driver_joins_running_instance(ray_head, tmp_path):
    # Ray finds the instance that `ray start` left through <RAY_TMPDIR>/ray/ray_current_cluster,
    # as it finds /tmp/ray/ray_current_cluster on a workstation.
    (tmp_path / "ray").symlink_to(ray_head.temp_dir)
    env = {key: value for key, value in ray_head.env.items() if key != "RAY_ADDRESS"}
    env["RAY_TMPDIR"] = str(tmp_path)
    code = (
        "import sys; sys.path.insert(0, 'pipelines'); import ray; from _common import init_ray; "
        "init_ray(address=None, num_cpus=3); print('gcs', ray.get_runtime_context().gcs_address)"
    )

    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                               timeout=300)

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert f"gcs {ray_head.address}" in completed.stdout
    assert "--num-cpus 3 is ignored" in completed.stderr
