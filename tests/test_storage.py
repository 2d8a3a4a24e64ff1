"""Tests for stsep.storage against a real S3-compatible server (moto) on loopback.

Every client under test talks to the moto server that the ``s3_server``
fixture starts on 127.0.0.1: boto3, pyarrow's S3FileSystem, MLflow's S3
artifact repository and Ray Tune's checkpoint storage.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
import uuid

import boto3
import pyarrow.fs as pafs
import pytest

from stsep import storage
from stsep.storage import S3Settings, StoragePreflightError
from tests.plugins.servers import FAKE_AWS_ENV, _stop, free_port, wait_for_http

SECRET = FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]

# A failing preflight must end well before botocore's defaults would give up
# on a silent endpoint (60 s read timeout, several attempts). The margin
# covers a 2-core CI machine under load, where a missing bucket once took 16 s.
PREFLIGHT_FAILURE_DEADLINE_S = 45.0


@pytest.fixture(autouse=True)
def no_metadata_service(monkeypatch):
    """Keep boto3 and pyarrow away from the EC2 metadata service."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def settings(s3_server):
    """Settings that name the loopback server with path-style addressing."""
    return S3Settings(endpoint_url=s3_server, region="us-east-1", addressing_style="path")


@pytest.fixture
def mlflow_s3_env(settings, monkeypatch):
    """Put the settings' MLflow variables into this process, as a driver would."""
    for key, value in storage.mlflow_env(settings).items():
        monkeypatch.setenv(key, value)
    return settings


def _keys(endpoint: str, bucket: str) -> list[str]:
    client = boto3.client("s3", endpoint_url=endpoint)
    return [item["Key"] for item in client.list_objects_v2(Bucket=bucket).get("Contents", [])]


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, S3Settings()),
        ({"AWS_ENDPOINT_URL": "http://a:1"}, S3Settings(endpoint_url="http://a:1")),
        ({"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "http://b:2"},
         S3Settings(endpoint_url="http://b:2")),
        ({"MLFLOW_S3_ENDPOINT_URL": "https://c:3"}, S3Settings(endpoint_url="https://c:3")),
        ({"AWS_DEFAULT_REGION": "eu-west-1", "AWS_REGION": "eu-central-1"}, S3Settings(region="eu-central-1")),
        ({"MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path"}, S3Settings(addressing_style="path")),
        ({"STSEP_S3_ADDRESSING_STYLE": "virtual", "MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE": "path"},
         S3Settings(addressing_style="virtual")),
        ({"AWS_PROFILE": "research"}, S3Settings(profile="research")),
    ],
)
def test_settings_from_env(environ, expected):
    assert S3Settings.from_env(environ) == expected


def test_settings_from_config_overrides_env():
    environ = {"AWS_ENDPOINT_URL": "http://env:1", "AWS_REGION": "eu-west-1"}

    actual = S3Settings.from_config({"endpoint_url": "http://config:2", "region": None}, environ=environ)

    assert actual.endpoint_url == "http://config:2"
    assert actual.region == "eu-west-1"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"endpoint": "http://a:1"}, "unknown S3 setting"),
        ({"endpoint_url": "minio:9000"}, "http://host"),
        ({"endpoint_url": "http://127.0.0.1:notaport"}, "port is not a number"),
        ({"addressing_style": "dns"}, "auto, path, virtual"),
        ({"region": "  "}, "non-empty"),
        ("http://a:1", "must be a mapping"),
    ],
)
def test_settings_reject_invalid_config(config, message):
    with pytest.raises(ValueError, match=message):
        S3Settings.from_config(config, environ={})


def test_settings_reject_credentials_in_endpoint():
    with pytest.raises(ValueError) as excinfo:
        S3Settings(endpoint_url=f"http://user:{SECRET}@127.0.0.1:9000")

    assert SECRET not in str(excinfo.value)
    assert "contains credentials" in str(excinfo.value)


def test_runtime_env_vars_carry_settings():
    settings = S3Settings(endpoint_url="http://store:9000", region="eu-west-1", addressing_style="path", profile="lab")

    env = storage.runtime_env_vars(settings)

    assert S3Settings.from_env(env) == settings
    assert env["MLFLOW_S3_ENDPOINT_URL"] == "http://store:9000"
    assert env["MLFLOW_BOTO_CLIENT_ADDRESSING_STYLE"] == "path"
    assert not any("SECRET" in key or "TOKEN" in key or "ACCESS_KEY" in key for key in env)


def test_mlflow_env_empty_for_aws_defaults():
    assert storage.mlflow_env(S3Settings()) == {}


def test_boto3_client_without_endpoint_ignores_env(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    client = storage.boto3_client(S3Settings(region="us-east-1"))

    assert "amazonaws.com" in client.meta.endpoint_url


def test_pyarrow_filesystem_rejects_profile_mismatch(monkeypatch):
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    with pytest.raises(ValueError, match="AWS_PROFILE"):
        storage.pyarrow_filesystem(S3Settings(profile="lab"))


def test_redact_removes_secrets(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    text = (
        f"key {SECRET}; http://user:hunter22@host/x; "
        "https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIA%2F&X-Amz-Signature=abc123; aws_secret_access_key = zzz"
    )

    redacted = storage.redact(text)

    for secret in (SECRET, "hunter22", "abc123", "AKIA%2F", "zzz"):
        assert secret not in redacted


# -------------------------------------------------------------- filesystems


def test_filesystem_for_local_and_s3(tmp_path, settings):
    local_fs, local_path = storage.filesystem_for(str(tmp_path / "runs"))
    file_fs, file_path = storage.filesystem_for(f"file://{tmp_path}/runs")
    s3_fs, s3_path = storage.filesystem_for("s3://bucket/runs/", settings)

    assert isinstance(local_fs, pafs.LocalFileSystem)
    assert local_path == str(tmp_path / "runs")
    assert isinstance(file_fs, pafs.LocalFileSystem)
    assert file_path == str(tmp_path / "runs")
    assert isinstance(s3_fs, pafs.S3FileSystem)
    assert s3_path == "bucket/runs"


@pytest.mark.parametrize(("uri", "message"), [("gs://b/k", "unsupported storage scheme"), ("s3:///k", "no bucket"),
                                              ("", "invalid storage location")])
def test_filesystem_for_rejects_invalid(uri, message):
    with pytest.raises(ValueError, match=message):
        storage.filesystem_for(uri)


def test_boto3_write_pyarrow_read(settings, s3_bucket):
    client = storage.boto3_client(settings)
    filesystem = storage.pyarrow_filesystem(settings)

    client.put_object(Bucket=s3_bucket, Key="clips/a.bin", Body=b"from boto3")
    with filesystem.open_input_stream(f"{s3_bucket}/clips/a.bin") as stream:
        actual = stream.read()

    assert actual == b"from boto3"


def test_pyarrow_write_boto3_read(settings, s3_bucket):
    client = storage.boto3_client(settings)
    filesystem, path = storage.filesystem_for(f"s3://{s3_bucket}/clips/b.bin", settings)

    with filesystem.open_output_stream(path) as stream:
        stream.write(b"from pyarrow")
    actual = client.get_object(Bucket=s3_bucket, Key="clips/b.bin")["Body"].read()

    assert actual == b"from pyarrow"


def test_clients_reach_endpoint_without_env(settings, s3_bucket, monkeypatch):
    # The endpoint must come from the settings alone, not from AWS_ENDPOINT_URL.
    monkeypatch.delenv("AWS_ENDPOINT_URL")

    storage.boto3_client(settings).put_object(Bucket=s3_bucket, Key="k", Body=b"v")
    info = storage.pyarrow_filesystem(settings).get_file_info(f"{s3_bucket}/k")

    assert info.type == pafs.FileType.File


def test_pyarrow_filesystem_pickles_without_secret(settings):
    filesystem = storage.pyarrow_filesystem(settings)

    payload = pickle.dumps(filesystem)

    assert SECRET.encode() not in payload
    assert pickle.loads(payload).get_file_info("no-such-bucket-xyz").type == pafs.FileType.NotFound


def test_ray_storage_filesystem_paths(tmp_path, settings):
    s3_path, s3_fs = storage.ray_storage_filesystem("s3://bucket/runs", settings)
    local_path, local_fs = storage.ray_storage_filesystem(str(tmp_path))

    assert s3_path == "bucket/runs"
    assert isinstance(s3_fs, pafs.S3FileSystem)
    assert local_path == str(tmp_path)
    assert local_fs is None


@pytest.mark.slow
def test_ray_tune_checkpoints_reach_s3(settings, s3_bucket, tmp_path, monkeypatch):
    import ray
    from ray import tune

    def trainable(config):
        import tempfile

        from ray.tune import Checkpoint

        with tempfile.TemporaryDirectory() as directory:
            with open(os.path.join(directory, "state.txt"), "w") as handle:
                handle.write(str(config["x"]))
            tune.report({"score": config["x"]}, checkpoint=Checkpoint.from_directory(directory))

    # Workers would otherwise find the endpoint through AWS_ENDPOINT_URL.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    path, filesystem = storage.ray_storage_filesystem(f"s3://{s3_bucket}/runs", settings)
    ray.init(address="local", num_cpus=1, include_dashboard=False, _temp_dir=f"/tmp/rt{uuid.uuid4().hex[:6]}")
    try:
        tuner = tune.Tuner(
            trainable,
            param_space={"x": 3},
            run_config=tune.RunConfig(name="probe", storage_path=path, storage_filesystem=filesystem),
        )
        result = tuner.fit()[0]
    finally:
        ray.shutdown()

    keys = _keys(settings.endpoint_url, s3_bucket)
    assert result.error is None
    assert result.metrics["score"] == 3
    assert result.checkpoint.path.startswith(f"{s3_bucket}/runs/probe/")
    assert any(key.startswith("runs/probe/") and key.endswith("/state.txt") for key in keys), keys


# -------------------------------------------------------------------- MLflow


def test_mlflow_artifacts_reach_s3(settings, s3_bucket, tmp_path, monkeypatch):
    import mlflow

    # MLflow must find the endpoint through mlflow_env alone.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    for key, value in storage.mlflow_env(settings).items():
        monkeypatch.setenv(key, value)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        experiment_id = mlflow.create_experiment("s3-artifacts", artifact_location=f"s3://{s3_bucket}/mlruns")
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_text("top1,0.5\n", "summary.csv")
    finally:
        mlflow.set_tracking_uri(None)

    assert f"mlruns/{run.info.run_id}/artifacts/summary.csv" in _keys(settings.endpoint_url, s3_bucket)


@pytest.mark.slow
def test_mlflow_server_proxies_artifacts_to_s3(settings, s3_bucket, tmp_path, monkeypatch):
    import mlflow

    from tests.plugins.servers import start_mlflow_server

    # The server inherits this environment: it reaches the store through mlflow_env alone.
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    for key, value in storage.mlflow_env(settings).items():
        monkeypatch.setenv(key, value)
    process, uri = start_mlflow_server(tmp_path, artifacts_destination=f"s3://{s3_bucket}/mlartifacts")
    try:
        mlflow.set_tracking_uri(uri)
        with mlflow.start_run() as run:
            mlflow.log_text("top1,0.5\n", "summary.csv")
    finally:
        mlflow.set_tracking_uri(None)
        _stop(process)

    keys = _keys(settings.endpoint_url, s3_bucket)
    assert any(key.startswith("mlartifacts/") and key.endswith(f"{run.info.run_id}/artifacts/summary.csv")
               for key in keys), keys


# ----------------------------------------------------------------- preflight


def test_preflight_passes_and_cleans_up(mlflow_s3_env, s3_bucket, tmp_path, caplog):
    settings = mlflow_s3_env
    caplog.set_level(logging.INFO, logger="stsep.storage")

    storage.boto3_client(settings).put_object(Bucket=s3_bucket, Key="data/UCF-101/a.avi", Body=b"video")

    results = storage.preflight(
        [f"s3://{s3_bucket}/runs", str(tmp_path)], settings, read_only_uris=[f"s3://{s3_bucket}/data"]
    )

    assert [result.uri for result in results] == [f"s3://{s3_bucket}/runs", f"s3://{s3_bucket}/data"]
    assert results[0].clients == ("boto3", "pyarrow", "mlflow")
    assert results[1].clients == ("boto3", "pyarrow")
    assert _keys(settings.endpoint_url, s3_bucket) == ["data/UCF-101/a.avi"]
    assert "Storage preflight passed" in caplog.text


def _assert_one_line_failure(error: StoragePreflightError, *, client: str, bucket: str) -> None:
    message = str(error)
    assert "\n" not in message
    assert error.client == client
    assert f"{client} could not" in message
    assert bucket in message
    assert SECRET not in message


def test_preflight_missing_bucket(settings, caplog):
    caplog.set_level(logging.DEBUG)
    bucket = f"missing-{uuid.uuid4().hex[:8]}"

    start = time.monotonic()
    with pytest.raises(StoragePreflightError) as excinfo:
        storage.preflight([f"s3://{bucket}/runs"], settings)
    elapsed = time.monotonic() - start

    _assert_one_line_failure(excinfo.value, client="boto3", bucket=bucket)
    assert "bucket not found" in str(excinfo.value)
    assert elapsed < PREFLIGHT_FAILURE_DEADLINE_S
    assert SECRET not in caplog.text


def test_preflight_wrong_endpoint(caplog):
    caplog.set_level(logging.DEBUG)
    endpoint = f"http://127.0.0.1:{free_port()}"
    settings = S3Settings(endpoint_url=endpoint, region="us-east-1")

    start = time.monotonic()
    with pytest.raises(StoragePreflightError) as excinfo:
        storage.preflight(["s3://any-bucket/runs"], settings)
    elapsed = time.monotonic() - start

    _assert_one_line_failure(excinfo.value, client="boto3", bucket="any-bucket")
    assert endpoint in str(excinfo.value)
    assert "cannot reach the endpoint" in str(excinfo.value)
    assert elapsed < PREFLIGHT_FAILURE_DEADLINE_S
    assert SECRET not in caplog.text


@pytest.fixture
def silent_endpoint():
    """A loopback server that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0))
    connections = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                connections.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in connections:
            connection.close()
        server.close()


def test_preflight_silent_endpoint_times_out(silent_endpoint):
    settings = S3Settings(endpoint_url=silent_endpoint, region="us-east-1")

    start = time.monotonic()
    with pytest.raises(StoragePreflightError) as excinfo:
        storage.preflight(["s3://any-bucket/runs"], settings)
    elapsed = time.monotonic() - start

    _assert_one_line_failure(excinfo.value, client="boto3", bucket="any-bucket")
    assert "timeout" in str(excinfo.value).lower()
    assert elapsed < PREFLIGHT_FAILURE_DEADLINE_S


def test_preflight_mlflow_endpoint_mismatch(mlflow_s3_env, s3_bucket, monkeypatch):
    settings = mlflow_s3_env
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")

    with pytest.raises(StoragePreflightError) as excinfo:
        storage.preflight([f"s3://{s3_bucket}/runs"], settings)

    _assert_one_line_failure(excinfo.value, client="mlflow", bucket=s3_bucket)
    assert "mlflow_env" in str(excinfo.value)
    assert _keys(settings.endpoint_url, s3_bucket) == []


def test_preflight_read_only_location_empty(settings, s3_bucket):
    with pytest.raises(StoragePreflightError) as excinfo:
        storage.preflight([], settings, read_only_uris=[f"s3://{s3_bucket}/no-such-dataset"])

    _assert_one_line_failure(excinfo.value, client="boto3", bucket=s3_bucket)
    # The message names the dataset location, not a probe object under it.
    assert f"could not list s3://{s3_bucket}/no-such-dataset at " in str(excinfo.value)
    assert ".stsep-preflight" not in str(excinfo.value)
    assert "no objects there" in str(excinfo.value)


def test_preflight_https_against_plain_http_store(s3_server, s3_bucket):
    settings = S3Settings(endpoint_url=s3_server.replace("http://", "https://"), region="us-east-1")

    with pytest.raises(StoragePreflightError) as excinfo:
        storage.preflight([f"s3://{s3_bucket}/runs"], settings)

    _assert_one_line_failure(excinfo.value, client="boto3", bucket=s3_bucket)
    assert "check http versus https in endpoint_url" in str(excinfo.value)


def test_preflight_rejects_invalid_locations(settings):
    with pytest.raises(ValueError, match="list of strings"):
        storage.preflight("s3://bucket/runs", settings)
    with pytest.raises(ValueError, match="unsupported storage scheme"):
        storage.preflight(["gs://bucket/runs"], settings)


@pytest.fixture
def s3_server_with_auth(s3_server):
    """A second moto server that checks credentials, so fake keys are denied."""
    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"}
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}", timeout_s=30, process=process)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(process)


def test_preflight_access_denied(s3_server_with_auth, caplog):
    caplog.set_level(logging.DEBUG)
    settings = S3Settings(endpoint_url=s3_server_with_auth, region="us-east-1", addressing_style="path")

    with pytest.raises(StoragePreflightError) as excinfo:
        storage.preflight(["s3://locked-bucket/runs"], settings)

    _assert_one_line_failure(excinfo.value, client="boto3", bucket="locked-bucket")
    assert "access denied" in str(excinfo.value)
    assert SECRET not in caplog.text


def test_preflight_command_line(s3_server, s3_bucket):
    env = {key: value for key, value in os.environ.items() if key != "AWS_ENDPOINT_URL"}
    command = [sys.executable, "-m", "stsep.storage", "--endpoint-url", s3_server]

    passed = subprocess.run([*command, f"s3://{s3_bucket}/runs"], capture_output=True, text=True, env=env, timeout=120)
    missing = subprocess.run([*command, f"s3://{s3_bucket}-missing/runs"], capture_output=True, text=True, env=env,
                             timeout=120)

    assert passed.returncode == 0, passed.stderr
    assert passed.stdout.startswith(f"ok s3://{s3_bucket}/runs (boto3, pyarrow, mlflow) in ")
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert missing.stderr.startswith(f"error: storage preflight failed: boto3 could not write s3://{s3_bucket}-missing/")
    assert "bucket not found" in missing.stderr
