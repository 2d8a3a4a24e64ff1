"""The README's first commands, followed as a new user would on a clean checkout.

The test clones the repository, runs the smoke ablation command exactly as the
README prints it, then opens the local MLflow store with the README's `mlflow
ui` command (on a free port) and checks the runs it should show.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.plugins.servers import free_port, wait_for_http

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]


def _readme_commands(section: str) -> list[str]:
    """Return the indented command lines of one README section, comments removed."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(section)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert match, f"README has no section '## {section}'"
    lines = [line[4:].split("  #")[0].strip() for line in match.group(1).splitlines() if line.startswith("    ")]
    return [line for line in lines if line]


def test_readme_commands_on_clean_checkout(tmp_path):
    checkout = tmp_path / "stsep"
    subprocess.run(["git", "clone", "--quiet", str(REPO_ROOT), str(checkout)], check=True)
    run_command = next(line for line in _readme_commands("Run the ablation") if "--smoke" in line)
    ui_command = next(line for line in _readme_commands("Compare runs in MLflow") if line.startswith("mlflow ui"))
    assert run_command == "python pipelines/ablation.py --config demo --smoke"
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_ADDRESS", "MLFLOW_"))}
    # Ray's socket paths must stay under 108 bytes, so its temp dir sits directly in /tmp.
    env["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="rr", dir="/tmp")

    try:
        completed = subprocess.run(
            shlex.split(run_command.replace("python", sys.executable, 1)),
            cwd=checkout, env=env, capture_output=True, text=True, timeout=1200,
        )
    finally:
        shutil.rmtree(env["RAY_TMPDIR"], ignore_errors=True)

    assert completed.returncode == 0, (completed.stdout + completed.stderr)[-4000:]
    assert (checkout / "mlflow.db").is_file()
    client = MlflowClient(f"sqlite:///{checkout / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("stsep-demo")
    assert experiment is not None
    trials = client.search_runs([experiment.experiment_id], filter_string="tags.`stsep.role` = 'trial'")
    assert sorted(run.data.params["variant"] for run in trials) == ["ns4", "stsep-s34-state", "vanilla"]
    assert all(run.info.status == "FINISHED" for run in trials)
    assert all("val_top1" in run.data.metrics for run in trials)

    port = free_port()
    ui_arguments = shlex.split(ui_command.replace("--port 5000", f"--port {port}"))
    server = subprocess.Popen(ui_arguments, cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", timeout_s=90, process=server)
        listing = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get-by-name?experiment_name=stsep-demo", timeout=10
        ).read().decode()
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert experiment.experiment_id in listing
