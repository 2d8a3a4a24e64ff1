"""The ablation pipeline with every path on S3, served by a moto server on loopback.

One run of ``pipelines/ablation.py`` prepares a UCF101 manifest from
``s3://``, trains one trial with its Ray storage on ``s3://`` and logs MLflow
artifacts to ``s3://``. The endpoint reaches the driver and the Ray workers
only through the config's ``s3`` section, never through ``AWS_ENDPOINT_URL``.
The same run is then searched for the fake credentials it was given. Other
tests run the preflight through the pipeline with a wrong endpoint or a
missing bucket.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.plugins.servers import free_port
from tests.plugins.videos import make_ucf101

REPO_ROOT = Path(__file__).resolve().parents[1]
ABLATION = REPO_ROOT / "pipelines" / "ablation.py"
# Variables that would hand the endpoint to a client behind the config's back.
ENDPOINT_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MLFLOW_S3_ENDPOINT_URL")


def _client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def _upload_tree(endpoint: str, bucket: str, local_root: Path, prefix: str) -> None:
    client = _client(endpoint)
    for path in sorted(local_root.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(local_root).as_posix()}")


def _keys(endpoint: str, bucket: str) -> list[str]:
    paginator = _client(endpoint).get_paginator("list_objects_v2")
    return [item["Key"] for page in paginator.paginate(Bucket=bucket) for item in page.get("Contents", [])]


def _fake_credentials() -> dict[str, str]:
    token = uuid.uuid4().hex
    return {
        "AWS_ACCESS_KEY_ID": f"AKIASTSEP{token[:11].upper()}",
        "AWS_SECRET_ACCESS_KEY": f"stsepSecret{token}",
        "AWS_SESSION_TOKEN": f"stsepSession{token[::-1]}",
    }


def _pipeline_env(credentials: dict[str, str], **extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in ENDPOINT_VARS}
    env.update(credentials, AWS_DEFAULT_REGION="us-east-1", **extra)
    return env


def _run_ablation(arguments: list[str], *, env: dict[str, str], cwd: Path, timeout_s: float):
    return subprocess.run(
        [sys.executable, str(ABLATION), *arguments], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout_s
    )


@pytest.fixture
def ray_temp_dir():
    """A short Ray temp dir under /tmp (socket paths must stay under 108 bytes), removed afterwards."""
    path = tempfile.mkdtemp(prefix="rs3", dir="/tmp")
    yield Path(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_ablation_with_all_storage_on_s3(s3_server, s3_bucket, tmp_path, ray_temp_dir):
    import mlflow

    from stsep.storage import S3Settings
    from stsep.training.checkpoint import load_checkpoint

    make_ucf101(tmp_path / "ucf101", num_frames=12)
    _upload_tree(s3_server, s3_bucket, tmp_path / "ucf101", "datasets/ucf101")
    credentials = _fake_credentials()
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"

    completed = _run_ablation(
        ["--config", "demo", "--smoke", "--name", "s3-e2e", "--ray-address", "local", "--num-cpus", "3",
         "--set", "data.dataset=ucf101",
         "--set", f"data.root=s3://{s3_bucket}/datasets/ucf101",
         "--set", f"storage_path=s3://{s3_bucket}/runs",
         "--set", f"s3.endpoint_url={s3_server}",
         "--set", "s3.addressing_style=path",
         "--set", f"tracking.uri={uri}",
         "--set", f"tracking.artifact_location=s3://{s3_bucket}/mlflow",
         "--set", "grid.variants=[vanilla]",
         "--set", "train.global_batch_size=3"],
        env=_pipeline_env(credentials, RAY_TMPDIR=str(ray_temp_dir)),
        cwd=tmp_path, timeout_s=900,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert "Storage preflight passed for s3://" in output

    # The manifest, Tune state, the trial's checkpoint and the MLflow artifacts are all in the bucket.
    keys = _keys(s3_server, s3_bucket)
    assert "runs/manifests/ucf101-split1.parquet" in keys
    assert "runs/s3-e2e/config.yaml" in keys
    assert any(key.startswith("runs/s3-e2e/tune/") for key in keys), keys
    checkpoints = [key for key in keys if key.startswith("runs/s3-e2e/train/vanilla-seed0/checkpoint_")
                   and key.endswith("/checkpoint.pt")]
    assert checkpoints, keys
    assert not [key for key in keys if ".stsep-preflight" in key]

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("stsep-demo")
    assert experiment.artifact_location == f"s3://{s3_bucket}/mlflow"
    runs = client.search_runs([experiment.experiment_id])
    parent = next(run for run in runs if run.data.tags.get("stsep.role") == "ablation")
    trial = next(run for run in runs if run.data.tags.get("stsep.role") == "trial")
    assert parent.info.status == trial.info.status == "FINISHED"
    for name in ("summary.csv", "summary.md", "ablation_plot.png", "config.yaml"):
        assert f"mlflow/{parent.info.run_id}/artifacts/{name}" in keys, name
    assert f"mlflow/{trial.info.run_id}/artifacts/checkpoints/best/checkpoint.pt" in keys

    # The checkpoint on S3 loads through the same settings and belongs to the trial's MLflow run.
    os.environ.pop("AWS_ENDPOINT_URL_S3", None)
    settings = S3Settings(endpoint_url=s3_server, addressing_style="path")
    state = _load_with_settings(load_checkpoint, f"s3://{s3_bucket}/{checkpoints[-1]}", settings)
    assert state["epoch"] == 1
    assert state["mlflow_run_id"] == trial.info.run_id

    # No credential in anything the run recorded: MLflow params, tags, metric
    # names and artifacts, the bucket, the driver's output and Ray's logs.
    secrets = [credentials["AWS_SECRET_ACCESS_KEY"], credentials["AWS_SESSION_TOKEN"]]
    identifiers = [credentials["AWS_ACCESS_KEY_ID"]]
    records: list[tuple[str, bytes]] = [("driver output", output.encode())]
    for run in runs:
        name = run.data.tags.get("mlflow.runName")
        records.append((f"{name} params", repr(sorted(run.data.params.items())).encode()))
        records.append((f"{name} tags", repr(sorted(run.data.tags.items())).encode()))
        records.append((f"{name} metric names", repr(sorted(run.data.metrics)).encode()))
        download = Path(mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path / "artifacts" / run.info.run_id), tracking_uri=uri
        ))
        records += [(str(path), path.read_bytes()) for path in download.rglob("*") if path.is_file()]
    s3 = _client(s3_server)
    for key in keys:
        records.append((f"s3://{s3_bucket}/{key}", s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()))
    # Ray Tune copies AWS credentials into trial runtime environments, which
    # Ray's runtime-env agent logs; the pipeline must stop that.
    ray_files = [path for path in ray_temp_dir.rglob("*") if path.is_file() and path.stat().st_size < 2**26]
    assert any(path.name == "runtime_env_agent.log" for path in ray_files), f"no Ray logs under {ray_temp_dir}"
    records += [(str(path), path.read_bytes()) for path in ray_files]

    assert any(b"parent" in body or b"vanilla" in body for _, body in records)  # the records hold real content
    for secret in [*secrets, *identifiers]:
        leaks = [where for where, body in records if secret.encode() in body]
        assert not leaks, f"credential found in {leaks[:5]}"


def _load_with_settings(load, uri: str, settings) -> dict:
    """Load a checkpoint with only `settings` naming the endpoint, as a notebook would after export."""
    from stsep.storage import runtime_env_vars

    saved = {key: os.environ.get(key) for key in (*ENDPOINT_VARS, "STSEP_S3_ADDRESSING_STYLE")}
    for key in ENDPOINT_VARS:
        os.environ.pop(key, None)
    os.environ.update(runtime_env_vars(settings))
    try:
        return load(uri)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.mark.parametrize("problem", ["missing bucket", "wrong endpoint"])
def test_ablation_preflight_fails_before_ray(problem, s3_server, s3_bucket, tmp_path):
    bucket, endpoint = s3_bucket, s3_server
    if problem == "missing bucket":
        bucket = f"stsep-missing-{uuid.uuid4().hex[:8]}"
    else:
        endpoint = f"http://127.0.0.1:{free_port()}"

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    completed = _run_ablation(
        ["--config", "demo", "--smoke", "--ray-address", "local",
         "--set", f"storage_path=s3://{bucket}/runs",
         "--set", f"s3.endpoint_url={endpoint}",
         "--set", f"tracking.uri={uri}",
         "--set", f"tracking.artifact_location=s3://{bucket}/mlflow"],
        env=_pipeline_env(_fake_credentials()), cwd=tmp_path, timeout_s=300,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 1, output[-3000:]
    errors = [line for line in output.splitlines() if "storage preflight failed" in line]
    assert len(errors) == 1, output[-3000:]
    assert f"boto3 could not write s3://{bucket}/runs/.stsep-preflight/" in errors[0]
    expected = "bucket not found" if problem == "missing bucket" else "cannot reach the endpoint"
    assert expected in errors[0]
    assert endpoint in errors[0]
    assert "Ray cluster:" not in output  # failed before Ray started
    # No experiment is left bound to the bad location, so a corrected rerun can create it.
    assert MlflowClient(uri).get_experiment_by_name("stsep-demo") is None


def test_artifact_location_change_rejected(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    MlflowClient(uri).create_experiment("stsep-demo", artifact_location="s3://old-bucket/mlflow")

    completed = _run_ablation(
        ["--config", "demo", "--smoke", "--set", f"tracking.uri={uri}",
         "--set", "tracking.artifact_location=s3://new-bucket/mlflow"],
        env=_pipeline_env(_fake_credentials()), cwd=tmp_path, timeout_s=120,
    )

    assert completed.returncode == 2, completed.stderr[-3000:]
    assert "already stores its artifacts at 's3://old-bucket/mlflow'" in completed.stderr
    assert "set tracking.experiment to a new name" in completed.stderr


def test_ablation_rejects_credentials_in_endpoint(tmp_path):
    completed = _run_ablation(
        ["--config", "demo", "--smoke", "--set", "s3.endpoint_url=http://user:hunter2secret@127.0.0.1:9"],
        env=_pipeline_env(_fake_credentials()), cwd=tmp_path, timeout_s=120,
    )

    assert completed.returncode == 2
    assert completed.stderr.startswith("error: invalid s3 section: S3 endpoint_url")
    assert "hunter2secret" not in completed.stdout + completed.stderr
