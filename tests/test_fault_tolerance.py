"""Fault tolerance and step parity under Ray.

A killed worker group of two workers on an uneven split resumes from its
checkpoint, and an interrupted ablation resumes without rerunning finished
trials.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from stsep.data import write_manifest
from stsep.training import load_checkpoint
from stsep.training.loop import FAULT_EXIT_AFTER_EPOCH_ENV, FAULT_MARKER_ENV
from tests.test_training import REPO_ROOT, run_entry_point, write_video_manifest

pytestmark = pytest.mark.slow


def _trial_runs(client: MlflowClient, experiment: str) -> list:
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    return client.search_runs([experiment_id], filter_string="tags.`stsep.role` = 'trial'")


def test_killed_worker_group_resumes_from_checkpoint(tmp_path):
    # Two workers on 7 train videos with a global batch of 4: the split does
    # not divide evenly, and rank 0 is killed once after epoch 1's checkpoint.
    videos = tmp_path / "videos"
    manifest = write_video_manifest(videos, train_per_class=4, val_per_class=1)
    table = pd.read_parquet(manifest)
    write_manifest(table.drop(index=0).reset_index(drop=True), str(manifest), dataset="folder")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    marker = tmp_path / "killed-once"

    completed = run_entry_point(
        "train.py",
        ["--smoke", "--num-cpus", "4", "--variant", "rns1", "--name", "fault",
         "--set", "data.dataset=manifest", "--set", f"data.manifest_path={manifest}", "--set", "data.limit_per_class=null",
         "--set", "resources.num_workers=2", "--set", "train.global_batch_size=4", "--set", "train.epochs=2",
         "--set", f"storage_path={tmp_path / 'runs'}"],
        cwd=tmp_path,
        env={"MLFLOW_TRACKING_URI": uri, FAULT_EXIT_AFTER_EPOCH_ENV: "1", FAULT_MARKER_ENV: str(marker)},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert marker.exists(), "the fault hook never killed rank 0"
    client = MlflowClient(uri)
    (run,) = _trial_runs(client, "stsep-demo")
    assert run.info.status == "FINISHED"
    assert run.data.params["variant"] == "rns1"

    # Epoch 2 continued from epoch 1's checkpoint: no epoch was trained twice.
    epochs = client.get_metric_history(run.info.run_id, "epoch")
    assert sorted((metric.step, metric.value) for metric in epochs) == [(1, 1.0), (2, 2.0)]

    # Both workers ran the same single step per epoch on 3 clips each.
    steps = client.get_metric_history(run.info.run_id, "train_steps")
    clips = client.get_metric_history(run.info.run_id, "train_clips")
    assert [metric.value for metric in steps] == [1.0, 1.0]
    assert [metric.value for metric in clips] == [4.0, 4.0]
    assert 0.0 <= run.data.metrics["val_top1"] <= 1.0

    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "confusion_matrix.csv", "confusion_matrix.png", "per_class_accuracy.csv"} <= artifacts
    best = {item.path for item in client.list_artifacts(run.info.run_id, "checkpoints/best")}
    assert best == {"checkpoints/best/checkpoint.pt"}
    run_directory = tmp_path / "runs" / "fault" / "train" / "rns1-seed0"
    checkpoints = sorted(path for path in run_directory.glob("checkpoint_*") if path.is_dir())
    assert checkpoints, "no checkpoint was kept"
    assert load_checkpoint(checkpoints[-1])["epoch"] == 2


def _wait_for_second_trial(client_uri: str, process: subprocess.Popen, *, timeout_s: float) -> str:
    """Wait until one trial run is finished and the next one has started; return the finished run's id.

    With one trial at a time, the second run appears only after Tune has
    recorded the first trial as terminated.
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the ablation exited with {process.returncode} before the second trial started")
        try:
            client = MlflowClient(client_uri)
            experiment = client.get_experiment_by_name("stsep-demo")
            runs = [] if experiment is None else _trial_runs(client, "stsep-demo")
        except Exception:  # The store may be mid-migration on the first poll.
            runs = []
        finished = [run.info.run_id for run in runs if run.info.status == "FINISHED"]
        if len(runs) == 2 and len(finished) == 1:
            return finished[0]
        time.sleep(2)
    raise AssertionError(f"the second trial did not start within {timeout_s:.0f} s")


def test_interrupted_ablation_resumes_unfinished_trials(tmp_path):
    manifest = write_video_manifest(tmp_path / "videos", train_per_class=2, val_per_class=1)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    arguments = [
        sys.executable, str(REPO_ROOT / "pipelines" / "ablation.py"), "--ray-address", "local", "--num-cpus", "3",
        "--smoke", "--name", "interrupted",
        "--set", "data.dataset=manifest", "--set", f"data.manifest_path={manifest}",
        "--set", "grid.variants=[vanilla, ns4]", "--set", "tune.max_concurrent_trials=1",
        "--set", f"storage_path={tmp_path / 'runs'}",
    ]
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri)
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(arguments, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        finished_run = _wait_for_second_trial(uri, first, timeout_s=400)
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
        log.close()
    runs_after_interrupt = {run.data.tags["stsep.trial"]: run.info.status for run in _trial_runs(MlflowClient(uri), "stsep-demo")}

    completed = run_entry_point(
        "ablation.py", ["--num-cpus", "3", "--resume", "--name", "interrupted", "--set", f"storage_path={tmp_path / 'runs'}"],
        cwd=tmp_path, env={"MLFLOW_TRACKING_URI": uri},
    )

    assert first.returncode == 130, (tmp_path / "first.log").read_text()[-3000:]
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert list(runs_after_interrupt.values()).count("FINISHED") == 1, runs_after_interrupt
    client = MlflowClient(uri)
    runs = _trial_runs(client, "stsep-demo")
    assert sorted(run.data.tags["stsep.trial"] for run in runs) == ["ns4-seed0", "vanilla-seed0"]
    assert all(run.info.status == "FINISHED" for run in runs)
    assert all(run.data.tags["mlflow.parentRunId"] == runs[0].data.tags["mlflow.parentRunId"] for run in runs)
    # The trial that finished before the interruption was not trained again.
    history = client.get_metric_history(finished_run, "epoch")
    assert [metric.value for metric in history] == [1.0]
    parents = client.search_runs(
        [client.get_experiment_by_name("stsep-demo").experiment_id], filter_string="tags.`stsep.role` = 'ablation'"
    )
    assert len(parents) == 1
    assert parents[0].info.status == "FINISHED"
    artifacts = {item.path for item in client.list_artifacts(parents[0].info.run_id)}
    assert {"summary.csv", "summary.md", "ablation_plot.png", "config.yaml"} <= artifacts
