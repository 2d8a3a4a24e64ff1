"""Tests of the training loop, its schedule and checkpoints, and MLflow tracking."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from torch import nn

from stsep.config import TrainConfig, load_config
from stsep.data import write_manifest
from stsep.tracking import (
    MAX_PARAM_KEY_LENGTH,
    MAX_PARAM_VALUE_LENGTH,
    find_or_create_ablation_run,
    find_or_create_trial_run,
    flatten_params,
    sanitize_params,
)
from stsep.training import build_optimizer, build_scheduler, load_checkpoint, lr_factor, write_checkpoint
from tests.plugins.servers import free_port, wait_for_http
from tests.plugins.videos import numbered_frames, write_video

REPO_ROOT = Path(__file__).resolve().parents[1]


def write_video_manifest(root: Path, *, train_per_class: int, val_per_class: int, classes: int = 2) -> Path:
    """Encode tiny numbered H.264 videos and write a manifest for them (no probing needed).

    Returns:
        The manifest path.
    """
    rows = []
    for label in range(classes):
        for index in range(train_per_class + val_per_class):
            split = "train" if index < train_per_class else "val"
            path = write_video(root / f"class{label}" / f"video{index}.mp4", numbered_frames(16, seed=label * 100 + index))
            rows.append(
                {"video_id": f"class{label}-{index}", "path": str(path), "label": label, "label_name": f"class{label}",
                 "split": split, "num_frames": 16, "fps": 25.0, "width": 64, "height": 48}
            )
    manifest = root / "manifest.parquet"
    write_manifest(pd.DataFrame(rows), str(manifest), dataset="folder")
    return manifest


def run_entry_point(script: str, arguments: list[str], *, cwd: Path, env: dict[str, str] | None = None,
                    timeout: int = 400) -> subprocess.CompletedProcess:
    """Run a pipeline entry point with a private local Ray instance."""
    environment = dict(os.environ, **(env or {}))
    return subprocess.run(
        [sys.executable, str(REPO_ROOT / "pipelines" / script), "--ray-address", "local", *arguments],
        capture_output=True, text=True, cwd=cwd, env=environment, timeout=timeout,
    )


# ------------------------------------------------------------ schedule, optimizer


def test_lr_warmup_then_cosine():
    factors = [lr_factor(step, warmup_steps=4, total_steps=12) for step in range(12)]

    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert factors[4] == pytest.approx(1.0)
    assert all(earlier >= later for earlier, later in zip(factors[4:], factors[5:]))
    assert lr_factor(12, warmup_steps=4, total_steps=12) == pytest.approx(0.0)


def test_scheduler_follows_factor():
    model = nn.Linear(4, 2)
    optimizer = build_optimizer(model, train=TrainConfig(lr=0.1, warmup_epochs=1, epochs=3))
    scheduler = build_scheduler(optimizer, warmup_steps=2, total_steps=6)

    rates = []
    for _ in range(6):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    assert rates[0] == pytest.approx(0.05)
    assert rates[1] == pytest.approx(0.1)
    assert rates[-1] < rates[2]


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_skips_decay_on_biases_and_norms(name):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 5, 5))

    optimizer = build_optimizer(model, train=TrainConfig(optimizer=name, weight_decay=0.01))

    decayed, plain = optimizer.param_groups
    assert decayed["weight_decay"] == 0.01
    assert plain["weight_decay"] == 0.0
    assert all(parameter.ndim > 1 for parameter in decayed["params"])
    assert all(parameter.ndim == 1 for parameter in plain["params"])


# ----------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip(tmp_path):
    model = nn.Linear(3, 2)
    state = {"model": model.state_dict(), "epoch": 3, "best_val_top1": 0.5, "mlflow_run_id": "abc"}

    directory = write_checkpoint(state, directory=tmp_path / "ckpt")
    loaded = load_checkpoint(directory)

    assert loaded["epoch"] == 3
    assert loaded["mlflow_run_id"] == "abc"
    assert torch.equal(loaded["model"]["weight"], model.weight)
    assert not list(directory.glob("*.partial"))


def test_checkpoint_loads_from_s3(tmp_path, s3_bucket):
    import boto3

    directory = write_checkpoint({"epoch": 2, "model": {}}, directory=tmp_path / "ckpt")
    boto3.client("s3").upload_file(str(directory / "checkpoint.pt"), s3_bucket, "run/checkpoint_000/checkpoint.pt")

    loaded = load_checkpoint(f"s3://{s3_bucket}/run/checkpoint_000")

    assert loaded["epoch"] == 2


def test_missing_checkpoint_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        load_checkpoint(tmp_path)


# ------------------------------------------------------------------- tracking


def test_params_within_mlflow_limits_for_huge_config(tmp_path):
    config = load_config("demo").to_dict()
    config["extra"] = {
        "k" * 400: "short",
        "long_value": "v" * 50_000,
        "nested": {f"level{index}": list(range(3000)) for index in range(3)},
        "aws_secret_access_key": "do-not-log",
        "api_token": "do-not-log",
        "db_password": "do-not-log",
        "endpoint": "https://user:hunter2@example.invalid/path",
    }

    params = sanitize_params(flatten_params(config))

    assert all(len(key) <= MAX_PARAM_KEY_LENGTH for key in params)
    assert all(len(value) <= MAX_PARAM_VALUE_LENGTH for value in params.values())
    assert not any("secret" in key or "token" in key or "password" in key for key in params)
    assert all("do-not-log" not in value and "hunter2" not in value for value in params.values())
    assert params["extra.long_value"].endswith("...")

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = find_or_create_ablation_run(tracking_uri=uri, experiment="limits", ablation_id="huge")
    parent.log_config(config)
    client = MlflowClient(uri)
    logged = client.get_run(parent.run_id).data.params
    artifact = Path(client.download_artifacts(parent.run_id, "config.yaml", str(tmp_path)))
    full = yaml.safe_load(artifact.read_text())
    assert len(logged) == len(params)
    assert full["extra"]["long_value"] == "v" * 50_000
    assert "do-not-log" not in artifact.read_text()
    assert "hunter2" not in artifact.read_text()


def test_trial_run_found_again_by_tags(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = find_or_create_ablation_run(tracking_uri=uri, experiment="tags", ablation_id="a1")
    arguments = dict(tracking_uri=uri, experiment_id=parent.experiment_id, parent_run_id=parent.run_id,
                     ablation_id="a1", trial_key="ns2-seed0", run_name="ns2-seed0")

    first = find_or_create_trial_run(**arguments)
    first.log_params({"variant": "ns2"})
    first.finish("FAILED")
    second = find_or_create_trial_run(**arguments)
    second.log_params({"variant": "ns2", "seed": 0})
    again = find_or_create_ablation_run(tracking_uri=uri, experiment="tags", ablation_id="a1")

    assert second.run_id == first.run_id
    assert again.run_id == parent.run_id
    run = MlflowClient(uri).get_run(second.run_id)
    assert run.info.status == "RUNNING"
    assert run.data.tags["mlflow.parentRunId"] == parent.run_id
    assert run.data.params == {"variant": "ns2", "seed": "0"}


def _log_runs_in_process(uri: str, worker: int, runs: int) -> None:
    parent = find_or_create_ablation_run(tracking_uri=uri, experiment="concurrent", ablation_id="c")
    for index in range(runs):
        run = find_or_create_trial_run(
            tracking_uri=uri, experiment_id=parent.experiment_id, parent_run_id=parent.run_id, ablation_id="c",
            trial_key=f"w{worker}-{index}", run_name=f"w{worker}-{index}",
        )
        run.log_params({"worker": worker, "index": index})
        for epoch in range(1, 4):
            run.log_metrics({"val_top1": epoch / 10}, step=epoch)
        run.finish()


def test_sqlite_store_survives_concurrent_processes(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    (tmp_path / "fresh").mkdir()
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_log_runs_in_process, args=(uri, worker, 8)) for worker in range(3)]

    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=180)

    assert [process.exitcode for process in workers] == [0, 0, 0]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("concurrent")
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`stsep.role` = 'trial'")
    assert len(runs) == 24
    assert all(run.info.status == "FINISHED" for run in runs)
    assert all(len(client.get_metric_history(run.info.run_id, "val_top1")) == 3 for run in runs)


def _start_mlflow(root: Path, port: int) -> subprocess.Popen:
    process = subprocess.Popen(
        ["mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
    )
    wait_for_http(f"http://127.0.0.1:{port}/health", timeout_s=90, process=process)
    return process


def _stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def test_metrics_buffered_while_server_down(tmp_path, caplog):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = _start_mlflow(tmp_path, port)
    try:
        parent = find_or_create_ablation_run(tracking_uri=uri, experiment="outage", ablation_id="o")
        run = find_or_create_trial_run(tracking_uri=uri, experiment_id=parent.experiment_id,
                                       parent_run_id=parent.run_id, ablation_id="o", trial_key="t", run_name="t")
        run.log_metrics({"val_top1": 0.1}, step=1)
        _stop_process(server)

        with caplog.at_level("WARNING", logger="stsep.tracking"):
            run.log_metrics({"val_top1": 0.2}, step=2)
            run.log_metrics({"val_top1": 0.3}, step=3)
        pending_during_outage = run.pending_metrics
        server = _start_mlflow(tmp_path, port)
        run.log_metrics({"val_top1": 0.4}, step=4)
        run.finish()
    finally:
        _stop_process(server)

    # Read the server's backend store directly, without starting it again.
    store = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    history = store.get_metric_history(run.run_id, "val_top1")
    status = store.get_run(run.run_id).info.status
    assert pending_during_outage == 2
    assert run.pending_metrics == 0
    assert sorted((metric.step, metric.value) for metric in history) == [(1, 0.1), (2, 0.2), (3, 0.3), (4, 0.4)]
    assert status == "FINISHED"
    assert any("unreachable" in record.getMessage() for record in caplog.records)


# ------------------------------------------------------------------ step parity


def _parity_worker(rank: int, port: int, batches_per_rank: list[int], results: dict) -> None:
    import torch.distributed as dist

    from stsep.training.loop import _train_one_epoch

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    model = nn.parallel.DistributedDataParallel(nn.Sequential(nn.Flatten(), nn.Linear(2 * 3 * 4 * 4, 2)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    batches = [
        {"clip": torch.zeros(2, 2, 4, 4, 3, dtype=torch.uint8), "label": torch.tensor([0, 1]), "video_id": ["a", "b"]}
        for _ in range(batches_per_rank[rank])
    ]

    metrics = _train_one_epoch(
        model=model, optimizer=optimizer, scheduler=scheduler, scaler=torch.amp.GradScaler("cuda", enabled=False),
        criterion=nn.CrossEntropyLoss(), batches=batches, steps_per_epoch=5, device=torch.device("cpu"),
        to_input=lambda clips: clips.permute(0, 1, 4, 2, 3).float(), autocast=lambda: torch.autocast("cpu", enabled=False),
        grad_clip_norm=None, epoch=1, epochs=1, log_every_steps=100, rank=rank,
    )
    results[rank] = metrics["train_steps"]
    dist.destroy_process_group()


def test_uneven_batches_run_equal_steps():
    # spawn, not fork: a fork of this process, which runs MLflow and Ray
    # threads, can inherit a held lock and hang.
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager:
        results = manager.dict()
        port = free_port()
        processes = [context.Process(target=_parity_worker, args=(rank, port, [3, 2], results)) for rank in range(2)]
        for process in processes:
            process.start()
        for process in processes:
            process.join(timeout=120)
        exit_codes = [process.exitcode for process in processes]
        steps = dict(results)
        for process in processes:
            if process.is_alive():
                process.kill()

    assert exit_codes == [0, 0]
    assert steps == {0: 2.0, 1: 2.0}


def test_amp_dtype_resolution():
    from stsep.training.loop import resolve_amp_dtype

    assert resolve_amp_dtype("bfloat16") is torch.bfloat16
    assert resolve_amp_dtype("float16") is torch.float16
    # Without a GPU that supports bfloat16, auto falls back to float16 with loss scaling.
    expected = torch.bfloat16 if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else torch.float16
    assert resolve_amp_dtype("auto") is expected
    with pytest.raises(ValueError, match="expected auto, bfloat16 or float16"):
        resolve_amp_dtype("int8")


def test_clip_collate_copies_read_only_batches():
    from stsep.training.loop import ClipCollate

    clips = np.arange(2 * 2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 2, 4, 4, 3)
    clips.flags.writeable = False  # as Arrow-backed batches arrive
    batch = {"clip": clips, "label": np.array([3, 1]), "video_id": np.array(["a", "b"], dtype=object)}

    collated = ClipCollate()(batch)

    assert collated["clip"].dtype == torch.uint8
    assert torch.equal(collated["clip"], torch.from_numpy(clips.copy()))
    assert collated["label"].tolist() == [3, 1]
    assert collated["video_id"] == ["a", "b"]
    assert not collated["clip"].is_pinned()


# -------------------------------------------------------------------- summary


def test_summary_mean_std_and_plot(tmp_path):
    from stsep.analysis.summary import log_ablation_summary
    from stsep.variants import parse_variant

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = find_or_create_ablation_run(tracking_uri=uri, experiment="summary", ablation_id="s")
    best = {("vanilla", 0): 0.50, ("vanilla", 1): 0.60, ("ns2", 0): 0.70, ("ns2", 1): 0.80,
            ("ns4", 0): 0.40, ("rns1", 0): 0.65, ("stsep-s34-state", 0): 0.90}
    for (variant, seed), top1 in best.items():
        run = find_or_create_trial_run(tracking_uri=uri, experiment_id=parent.experiment_id,
                                       parent_run_id=parent.run_id, ablation_id="s",
                                       trial_key=f"{variant}-seed{seed}", run_name=f"{variant}-seed{seed}")
        run.log_params({**parse_variant(variant).to_params(), "variant": variant, "seed": seed})
        for epoch in (1, 2):
            run.log_metrics({"epoch": epoch, "val_top1": top1 - 0.1 * (2 - epoch), "val_top5": 1.0,
                             "best_val_top1": top1 if epoch == 2 else top1 - 0.1}, step=epoch)
        run.finish()

    summary = log_ablation_summary(tracking_uri=uri, experiment_id=parent.experiment_id, ablation_id="s",
                                   parent_run_id=parent.run_id)

    rows = summary.set_index("variant")
    assert list(summary["variant"]) == ["vanilla", "ns2", "ns4", "rns1", "stsep-s34-state"]
    assert rows.loc["vanilla", "top1_mean"] == pytest.approx(0.55)
    assert rows.loc["vanilla", "top1_std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert rows.loc["ns2", "seeds"] == 2
    assert rows.loc["ns4", "epochs"] == 2
    assert np.isnan(rows.loc["ns4", "top1_std"])
    client = MlflowClient(uri)
    artifacts = {item.path: item.file_size for item in client.list_artifacts(parent.run_id)}
    assert artifacts["ablation_plot.png"] > 1000
    table = Path(client.download_artifacts(parent.run_id, "summary.md", str(tmp_path))).read_text()
    assert "| ns2 | 2 (0 1) | 0.7500 ± 0.0707 | 1.0000 | 2 |" in table
    frame = pd.read_csv(client.download_artifacts(parent.run_id, "summary.csv", str(tmp_path)))
    assert len(frame) == 5
