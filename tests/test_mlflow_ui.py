"""MLflow UI: the ablation's comparison view lists every trial with its variant, depth and val_top1.

An MLflow server on loopback serves an ablation shaped like the training
pipeline's (a parent run and 20 trial runs). Headless Chromium opens the view
that `share_comparison_view` stores, once for a screenshot and once to dump
the rendered DOM, which must name every trial and show the columns.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import matplotlib.image
import pytest
from mlflow.tracking import MlflowClient

from stsep.analysis.report import list_trial_runs, share_comparison_view
from tests.plugins.servers import start_mlflow_server
from tests.test_report import SEEDS, TOP1, create_ablation_runs

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (apt-get install chromium); this test renders the MLflow UI with it",
    ),
]

# The MLflow UI loads runs with its own scripts after the page loads. In headless Chromium, 15 s of
# virtual time is enough for MLflow 3.17 to render the runs table.
VIRTUAL_TIME_BUDGET_MS = 15000
# Wide enough for every column of the view: the table only renders the columns in sight.
WINDOW_SIZE = "2560,1300"


def run_chromium(url: str, *, profile_dir: Path, output_flag: str) -> subprocess.CompletedProcess:
    """Open `url` in headless Chromium with a fresh profile and no traffic beyond the URL."""
    return subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic",
            f"--user-data-dir={profile_dir}", f"--window-size={WINDOW_SIZE}", "--hide-scrollbars",
            f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}", output_flag, url,
        ],
        capture_output=True, text=True, timeout=180,
    )


@pytest.fixture
def ablation_server(tmp_path):
    """Write an ablation into a SQLite store, then serve that store with `mlflow server` on loopback.

    Writing the 21 runs straight to SQLite takes a few seconds, against about
    15 s through the server's REST API on two cores.
    """
    root = tmp_path / "store"
    root.mkdir()
    store = MlflowClient(tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    runs = create_ablation_runs(store, "ui-ablation")
    process, uri = start_mlflow_server(root)
    try:
        yield uri, runs
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_comparison_view_lists_trials(ablation_server, tmp_path):
    server_uri, runs = ablation_server
    client = MlflowClient(tracking_uri=server_uri)
    parent = client.get_run(runs.parent_run_id)
    view_path = share_comparison_view(client, parent, list_trial_runs(client, parent))
    url = f"{server_uri}/{view_path}"
    screenshot = tmp_path / "mlflow_runs_table.png"

    shot = run_chromium(url, profile_dir=tmp_path / "profile-screenshot", output_flag=f"--screenshot={screenshot}")
    dom = run_chromium(url, profile_dir=tmp_path / "profile-dom", output_flag="--dump-dom")

    assert shot.returncode == 0, shot.stderr[-2000:]
    assert dom.returncode == 0, dom.stderr[-2000:]
    image = matplotlib.image.imread(screenshot)
    assert image.shape[:2] == (1300, 2560)
    assert image.std() > 0.05, f"the screenshot {screenshot} is blank"
    text = re.sub(r"<[^>]+>", " ", dom.stdout)
    missing = [f"{variant}-seed{seed}" for variant in TOP1 for seed in SEEDS if f"{variant}-seed{seed}" not in text]
    assert not missing, f"runs missing from the rendered table (screenshot {screenshot}): {missing}"
    for column in ("variant", "depth", "val_top1", "stage_map", "best_val_top1"):
        assert re.search(rf">\s*{column}\s*<", dom.stdout), f"column {column} not shown (screenshot {screenshot})"
    assert re.search(r"\b20\s+matching runs", text)
    assert re.search(r">\s*0\.66\s*<", dom.stdout), "val_top1 of stsep-s34-state-seed0 not shown"
